"""The dialog that asks the operator to confirm an action, with their name and a note."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


@dataclass(frozen=True)
class Confirmed:
    """What the operator entered when confirming.

    Attributes:
        user: The operator's name.
        note: The note (or reason), possibly empty.
        name: The signal's name (only asked for signals).
    """

    user: str
    note: str
    name: str = ""


class ConfirmScreen(ModalScreen[Confirmed | None]):
    """Ask to confirm an action; dismissed with :class:`Confirmed`, or None when canceled.

    Args:
        question: What will be done, in words.
        user: The operator's name to start with.
        ask_name: Also ask for a signal name (required then).
    """

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    #dialog { width: 64; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    #dialog Input { margin-bottom: 1; }
    #question { margin-bottom: 1; text-style: bold; }
    #buttons { height: auto; align-horizontal: right; }
    #buttons Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, user: str, *, ask_name: bool = False) -> None:
        super().__init__()
        self.question = question
        self.user = user
        self.ask_name = ask_name

    def compose(self) -> ComposeResult:
        """The question, the fields and the two buttons."""
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            if self.ask_name:
                yield Input(placeholder="signal name", id="signal-name")
            yield Label("operator (recorded with the action)")
            yield Input(value=self.user, placeholder="your name", id="user")
            yield Label("note")
            yield Input(placeholder="optional", id="note")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Confirm", variant="warning", id="confirm")

    def on_mount(self) -> None:
        """Start in the first field that needs typing."""
        self.query_one("#signal-name" if self.ask_name else "#note", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Confirm or cancel."""
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a field confirms."""
        self.action_confirm()

    def action_confirm(self) -> None:
        """Dismiss with what was entered, unless a required field is empty."""
        user = self.query_one("#user", Input).value.strip()
        name = self.query_one("#signal-name", Input).value.strip() if self.ask_name else ""
        if not user:
            self.notify("enter your name: it is recorded with the action", severity="warning")
            return
        if self.ask_name and not name:
            self.notify("enter the signal's name", severity="warning")
            return
        self.dismiss(Confirmed(user, self.query_one("#note", Input).value.strip(), name))

    def action_cancel(self) -> None:
        """Dismiss without acting."""
        self.dismiss(None)
