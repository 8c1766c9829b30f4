"""Reading a POSIX shell command template: where does each ``{key}`` placeholder stand?

:class:`ShellLexer` follows a ``ShellTask`` command template one piece of literal text at a
time and answers, at each placeholder, two questions:

* how the value must be quoted (:meth:`ShellLexer.quote`): it tracks single and double
  quotes, backslashes and the constructs in which quoting cannot be trusted at all
  (command and parameter substitutions, backticks, comments, here-documents), where a
  placeholder is refused (:meth:`ShellLexer.refusal`);
* what the shell will do with the quoted text (:meth:`ShellLexer.site`). Quoting makes a
  value one literal word, but some commands read a word again as shell code (``eval``,
  ``sh -c``), as a variable name, or as an arithmetic expression. Bash and zsh evaluate
  array subscripts inside arithmetic even when the text came from a quoted word, so
  ``(( 'a[$(cmd)]' ))``, ``[[ 'a[$(cmd)]' -gt 1 ]]``, ``read 'a[$(cmd)]'`` and
  ``declare -i n='a[$(cmd)]'`` all run ``cmd``. So the lexer also follows the words of the
  current simple command, arithmetic (``(( ))``, ``$[ ]``), ``[[ ]]``, subscripts and
  compound array assignments, and says which values a placeholder accepts there
  (:class:`~stabilize.tasks._shell_rules.Need`).

It is deliberately conservative: when a position might be arithmetic or a name, it asks
for a plain number or name. The rules are listed in ``docs/tasks/shell.md``.
"""

from __future__ import annotations

import re
import shlex

from stabilize.tasks._shell_rules import (
    ASSIGNMENT,
    DECLARE,
    EXPANDS,
    HOLE,
    NAME_ARGS,
    NUMERIC_ARGS,
    NUMERIC_DECLARE,
    PARAMETER_FORMS,
    PREFIXES,
    REPARSE,
    SPECIAL_NUMBERS,
    Need,
    Site,
    base,
    format_word,
    numeric_format,
    script_reason,
    shell_awaiting_script,
)

__all__ = ["ShellLexer"]

_WORD_BREAKS = frozenset(" \t\n;&|()<>")


class ShellLexer:
    """Tracks the shell context of a command template while it is read.

    Frames: ``top`` (unquoted), ``sq``, ``dq`` (``dq!`` once it held a substitution),
    ``cmd`` (``$(...)``, read like top), ``param`` (``${...}``) and ``bt`` (backticks).
    Placeholders are accepted only in ``top`` and in a ``sq``/``dq`` directly on it.

    Attributes:
        integer_attribute: The template gives some variable the integer (or float)
            attribute, after which a plain assignment to it is arithmetic.
        evaluates: The first construct in the template that evaluates text taken from a
            variable or parameter (arithmetic, ``eval``, ``${!x}``, ...), or None. A value
            stored in a variable by one command can reach it in another, so where it is set
            every placeholder needs a plain number (or name).
    """

    def __init__(self) -> None:
        self.stack: list[str] = ["top"]
        self.parens: list[int] = [0]
        self.escaped = False
        self.comment = False
        self.heredoc = False
        self.uncertain: str | None = None
        self.prev = "\n"
        self.words: list[str] = []
        self.word: list[str] = []
        self.word_started = False
        self.subscript = 0
        self.arith: int | None = None
        self.dollar_bracket = 0
        self.double_bracket = False
        self.array = False
        self.redirect = False
        self.integer_attribute = False
        self.evaluates: str | None = None
        self._text = ""
        self._at = 0
        self._param_start = False

    def _push(self, frame: str) -> None:
        self.stack.append(frame)
        self.parens.append(0)

    def _pop(self) -> None:
        self.stack.pop()
        self.parens.pop()

    def _mark(self, construct: str) -> None:
        if self.evaluates is None:
            self.evaluates = construct

    def _add(self, ch: str) -> None:
        if ch in "$`":
            self.word.append(EXPANDS)
        self._literal(ch)

    def _literal(self, ch: str) -> None:
        self.word.append(ch)
        self.word_started = True

    # -- words and commands ---------------------------------------------------------------

    def _command(self) -> int | None:
        """The index of the command word in ``words``, or None when it is still to come."""
        i = 0
        while i < len(self.words):
            word = self.words[i]
            if word in PREFIXES:
                i += 1
                if word in ("builtin", "command", "exec"):
                    while i < len(self.words) and self.words[i].startswith("-"):
                        i += 1
            elif ASSIGNMENT.match(word):
                i += 1
            else:
                return i
        return None

    def _end_word(self) -> None:
        if not self.word_started:
            return
        text = "".join(self.word)
        self.word, self.word_started, self.subscript = [], False, 0
        if self.redirect:
            self.redirect = False  # a redirection target is no argument
            return
        if text == "[[":
            self._mark("[[ ]]")
            self.double_bracket = True
        elif text == "]]":
            self.double_bracket = False
        if self.array:
            return
        at = self._command()
        command = base(self.words[at]) if at is not None else base(text)
        option = at is not None and text.startswith(("-", "+"))
        if command in NUMERIC_DECLARE or (
            command in DECLARE and option and (set(text) & set("iEF" + HOLE))
        ):
            self.integer_attribute = True
            self._mark(f"{command} with the integer attribute")
        if command in DECLARE and option and (set(text) & set("n" + HOLE)):
            self._mark(f"{command} -n (a name reference)")
        if at is None and EXPANDS in text and not ASSIGNMENT.match(text):
            self._mark("a command name computed from an expansion")
        if command == "let" or (command in REPARSE and command not in ("eval", "trap")):
            self._mark(repr(command))
        elif command in ("eval", "trap") and at is not None:
            if EXPANDS in text or HOLE in text:
                self._mark(f"{command} of an expansion")
            else:
                self._script(command, text)
        if at is not None:
            self._arguments(command, self.words[at + 1 :], text)
        shell = shell_awaiting_script(self.words)
        if shell is not None and not (option or text.startswith(("-", "+"))):
            self._script(shell, text)
        self.words.append(text)

    def _arguments(self, command: str, before: list[str], text: str) -> None:
        """Mark builtins that evaluate the text of an argument holding an expansion."""
        expands = (EXPANDS in text or HOLE in text) and text not in SPECIAL_NUMBERS
        if command in NUMERIC_ARGS and expands:
            self._mark(f"{command} with a computed argument, which zsh evaluates")
        elif command in ("read", "mapfile", "readarray") and re.fullmatch(
            r"-[A-Za-z]*[tnkuNC][A-Za-z]*", text
        ):
            self._mark(f"{command} {text}, whose argument zsh evaluates")
        elif command in ("printf", "print"):
            numeric = numeric_format(command, before)
            if numeric is None:  # ``text`` may be the format itself
                numeric = expands and format_word(command, [*before, text]) == text
            if numeric and expands:
                self._mark(f"{command} with a numeric conversion, whose arguments zsh evaluates")

    def _script(self, shell: str, text: str) -> None:
        """Read literal code run by ``shell`` (or eval, trap) too: it sees our variables."""
        inner = ShellLexer()
        inner.feed(text.replace(HOLE, "").replace(EXPANDS, ""))
        inner.finish()
        if inner.evaluates is not None:
            self._mark(f"{inner.evaluates} in the code run by {shell}")

    def _end_command(self) -> None:
        self._end_word()
        self.words = []
        self.array = False
        self.redirect = False

    def finish(self) -> None:
        """End the template: its last word counts too (for :attr:`evaluates`)."""
        self._end_command()

    # -- reading ----------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        """Advance the state over ``text`` (literal template text, braces unescaped)."""
        self._text = text
        i = 0
        while i < len(text):
            ch = text[i]
            nxt = text[i + 1] if i + 1 < len(text) else ""
            frame = self.stack[-1]
            self._at = i
            if self.comment:
                self.comment = ch != "\n"
                if ch == "\n":
                    self._end_command()
            elif self.escaped:
                self.escaped = False
                if ch != "\n":  # a backslash-newline joins lines
                    self._literal(ch)
            elif frame == "sq":
                if ch == "'":
                    self._pop()
                else:
                    self._literal(ch)
            elif frame == "ansi":
                if ch == "\\":  # dash has no $'...': it would end the string here
                    self._unsure("a backslash inside $'...'")
                    self.escaped = True
                elif ch == "'":
                    self._pop()
                else:
                    self._literal(ch)
            elif frame in ("dq", "dq!"):
                i = self._double_quoted(ch, nxt, i)
            elif frame != "top":
                i = self._nested(frame, ch, nxt, i)
            else:
                i = self._top(ch, nxt, i)
            self.prev = text[i]
            i += 1

    def _double_quoted(self, ch: str, nxt: str, i: int) -> int:
        if ch == "\\":
            self.escaped = True
        elif ch == '"':
            self._pop()
        elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
            self.stack[-1] = "dq!"
            self._add(ch)
            return self._substitution(ch, nxt, i)
        elif ch == "$" and nxt == "[":  # $[ ] is arithmetic in double quotes too
            self._mark("arithmetic $[ ]")
            self.dollar_bracket += 1
            self._add("$")
            return i + 1
        elif self.dollar_bracket and ch in "[]":
            self.dollar_bracket += 1 if ch == "[" else -1
        else:
            if ch == "[" and re.search(r"\$[A-Za-z0-9_]+\Z", "".join(self.word)):
                self._mark("a zsh subscript $name[...]")
            self._add(ch)
        return i

    def _unsure(self, construct: str) -> None:
        if self.uncertain is None:
            self.uncertain = construct

    def _nested(self, frame: str, ch: str, nxt: str, i: int) -> int:
        """One character inside ``$(...)``, ``${...}`` or backticks (part of the word)."""
        self._add(ch)
        if frame in ("param", "bt") and ch in "'\"":
            # Shells differ on quotes inside ${...} and backticks: stop trusting the state.
            self._unsure("a quote inside ${...} or backticks")
        elif frame == "cmd":
            self._unmodelled(ch, nxt)
        if frame == "cmd" and ch == "$" and nxt == "'":
            self._push("ansi")
            self._literal(nxt)
            return i + 1
        if frame == "param":
            self._parameter(ch, nxt)
        elif ch == "[" and frame == "cmd":
            self._subscript_opens()
        if (frame == "param" and ch == "}") or (frame == "bt" and ch == "`"):
            self._pop()
        elif frame == "cmd" and ch == ")":
            if self.parens[-1] == 0:
                self._pop()
            else:
                self.parens[-1] -= 1
        elif frame == "cmd" and ch == "(":
            self.parens[-1] += 1
        elif ch == "\\":
            self.escaped = True
        elif ch == "'" and frame == "cmd":
            self._push("sq")
        elif ch == '"' and frame == "cmd":
            self._push("dq")
        elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
            return self._substitution(ch, nxt, i)
        return i

    def _unmodelled(self, ch: str, nxt: str) -> None:
        """Notice what could end a ``$(...)`` elsewhere than this lexer thinks."""
        before = self._text[self._at - 1 : self._at] if self._at else self.prev
        if ch == "#" and (before in _WORD_BREAKS or not before):
            self._unsure("a comment inside $(...)")
        elif ch == "<" and nxt == "<":
            self._unsure("a here-document inside $(...)")
        elif ch == "e" and re.search(r"(\A|[\s;&|(])case\Z", self._text[: self._at + 1]):
            self._unsure("a case statement inside $(...)")

    def _top(self, ch: str, nxt: str, i: int) -> int:
        """One unquoted character at the top level."""
        if ch == "#" and self.prev in _WORD_BREAKS:
            self.comment = True
        elif ch == "\\":
            self.escaped = True
        elif ch == "'":
            self.word_started = True
            self._push("sq")
        elif ch == '"':
            self.word_started = True
            self._push("dq")
        elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
            self._add(ch)
            return self._substitution(ch, nxt, i)
        elif ch == "$" and nxt == "[":
            self._mark("arithmetic $[ ]")
            self.dollar_bracket += 1
            self._add("$")
            return i + 1
        elif ch == "$" and nxt == "'":
            self._add("$")
            self._push("ansi")
            return i + 1
        elif ch == "$" and nxt == "~":
            self._mark("zsh globbing $~x")
            self._add(ch)
        elif self.dollar_bracket and ch in "[]":
            self.dollar_bracket += 1 if ch == "[" else -1
            self._add(ch)
        elif self.arith is not None:
            return self._arithmetic(ch, nxt, i)
        elif ch == "<" and nxt == "<":
            self.heredoc = True
            return i + 1
        elif ch in " \t":
            self._end_word()
        elif ch in "\n;" or (ch in "&|" and not (self.prev in "<>" or nxt == ">")):
            self._end_command()
        elif ch in "<>&|":
            if self.word and "".join(self.word).isdigit():
                self.word, self.word_started = [], False  # a file descriptor number
            self._end_word()
            self.redirect = True
        elif ch == "(":
            return self._open_paren(nxt, i)
        elif ch == ")":
            if self.array:
                self._end_word()
                self.array = False
            else:
                self._end_command()
        elif ch == "[":
            self._subscript_opens()
            self.subscript += 1
            self._add(ch)
        elif ch == "]":
            self.subscript = max(0, self.subscript - 1)
            self._add(ch)
        else:
            self._add(ch)
        return i

    def _open_paren(self, nxt: str, i: int) -> int:
        self.redirect = False
        if nxt == "(" and not self.word_started:
            self._end_word()
            self._mark("arithmetic (( ))")
            self.arith = 0
            return i + 1
        if self.word_started and "".join(self.word).endswith("="):
            self._end_word()
            self.array = True
            return i
        self._end_command()
        return i

    def _arithmetic(self, ch: str, nxt: str, i: int) -> int:
        assert self.arith is not None
        if ch == "(":
            self.arith += 1
        elif ch == ")" and self.arith == 0 and nxt == ")":
            self.arith = None
            return i + 1
        elif ch == ")":
            self.arith = max(0, self.arith - 1)
        return i

    def _substitution(self, ch: str, nxt: str, i: int) -> int:
        if ch == "`":
            self._push("bt")
            return i
        if nxt == "(" and self._text[i + 2 : i + 3] == "(":
            self._mark("arithmetic $(( ))")
        self._push("cmd" if nxt == "(" else "param")
        self._param_start = nxt == "{"
        self._add(nxt)
        return i + 1

    def _parameter(self, ch: str, nxt: str) -> None:
        """Mark the forms of ``${...}`` that evaluate the text of a variable."""
        start, self._param_start = self._param_start, False
        if start and ch in PARAMETER_FORMS:
            self._mark(PARAMETER_FORMS[ch])
        elif ch == "[" and self._text[self._at : self._at + 3] not in ("[@]", "[*]"):
            self._mark("an array subscript ${x[...]}")
        elif ch == ":" and nxt not in "-=?+":
            self._mark("a substring ${x:offset}")
        elif ch == "@" and nxt == "P":
            self._mark("prompt expansion ${x@P}")

    def _subscript_opens(self) -> None:
        """An unquoted ``[`` right after a name (or zsh's ``$name``) opens a subscript."""
        before = "".join(self.word).replace(EXPANDS, "")
        if re.search(r"[A-Za-z0-9_}]\Z", before):
            self._mark("an array subscript name[...]")

    # -- placeholders -----------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why a placeholder may not stand here at all, or None when it may."""
        why = self._unquotable()
        if why is not None:
            return (
                f"{why}, where its value cannot be quoted safely; move it to a plain word, "
                "or pass the command as an argument list"
            )
        return self._reparsed()

    def _unquotable(self) -> str | None:
        if self.uncertain is not None:
            return f"after {self.uncertain}, which ShellTask cannot follow reliably"
        if self.stack[-1] == "ansi":
            return "inside $'...' (where backslashes escape)"
        if self.comment:
            return "inside a comment"
        if self.heredoc:
            return "after a here-document (<<)"
        if self.escaped:
            return "right after a backslash"
        frame = self.stack[-1]
        if self.prev == "$" and frame != "sq":
            return "right after '$' (write ${{VAR}} for a shell variable)"
        if frame == "dq!":
            return "inside a double-quoted string holding a command substitution"
        if len(self.stack) > 2 or (len(self.stack) == 2 and frame not in ("sq", "dq")):
            return "inside a command substitution, backticks or ${...}"
        return None

    def _reparsed(self) -> str | None:
        if self.arith is not None or self.dollar_bracket or self.double_bracket:
            return None
        if self.redirect or self.array:
            return None
        at = self._command()
        if at is None:
            current = "".join(self.word)
            if self.subscript or ASSIGNMENT.match(current):
                return None
            return (
                "in the command name: its value would choose what runs; choose the "
                "program in the template (e.g. with case) instead"
            )
        command = base(self.words[at])
        if command in REPARSE:
            return (
                f"in an argument of {command!r}, which runs it (or the file it names) as shell code"
            )
        shell = shell_awaiting_script(self.words)
        if shell is not None:
            return script_reason(shell)
        return None

    def site(self, key: str) -> Site:
        """What the value of placeholder ``key`` must be here (after :meth:`refusal`)."""
        if self.arith is not None or self.dollar_bracket:
            return Site(key, Need.NUMBER, "in an arithmetic expression ((( )) or $[ ])")
        if self.double_bracket:
            return Site(key, Need.NUMBER, "inside [[ ]], whose operands bash may evaluate")
        if self.subscript:
            return Site(key, Need.NUMBER, "in [ ] after a word (an array subscript)")
        if self.redirect:
            return Site(key, Need.ANY, "in a redirection target")
        current = "".join(self.word)
        at = self._command()
        command = base(self.words[at]) if at is not None else ""
        args = self.words[at + 1 :] if at is not None else []
        if self.array or at is None:
            if command in DECLARE and self._integer_options(command, args):
                return Site(key, Need.NUMBER, f"in a value assigned by {command} -i")
            return Site(key, Need.ASSIGNED, "in a value assigned to a variable")
        if command == "let":
            return Site(key, Need.NUMBER, "in an argument of 'let' (arithmetic)")
        if command in DECLARE:
            if "=" not in current:
                return Site(key, Need.NAME, f"in a variable name given to {command!r}")
            if self._integer_options(command, args):
                return Site(key, Need.NUMBER, f"in a value assigned by {command} -i")
            if any(a.startswith(("-", "+")) and "n" in a for a in args):
                return Site(key, Need.NAME, f"in the target of {command} -n (a name)")
            return Site(key, Need.ASSIGNED, f"in a value assigned by {command!r}")
        if command in NAME_ARGS:
            return Site(key, Need.PLAIN, f"in an argument of {command!r} (a variable name)")
        previous = args[-1] if args else ""
        if command in NUMERIC_ARGS:
            return Site(key, Need.NUMBER, f"in an argument of {command!r} (zsh: arithmetic)")
        if command in ("printf", "print") and (
            re.fullmatch(r"-[A-Za-z]*v[A-Za-z]*", previous) or re.match(r"-[A-Za-z]*v", current)
        ):
            return Site(key, Need.NAME, f"in the variable name of {command} -v")
        if command in ("printf", "print") and previous.startswith("-") and previous != "--":
            return Site(key, Need.PLAIN, f"in the argument of {command} {previous}")
        if command in ("printf", "print") and numeric_format(command, args):
            return Site(key, Need.NUMBER, f"in an argument of {command} with a numeric format")
        if command in ("test", "[") and previous in ("-v", "-R"):
            return Site(key, Need.NAME, f"in the variable name of {command} {previous}")
        if command in ("for", "select", "function") and not args:
            return Site(key, Need.NAME, f"in the variable name of {command!r}")
        return Site(key, Need.ANY, "in an argument")

    @staticmethod
    def _integer_options(command: str, args: list[str]) -> bool:
        return command in NUMERIC_DECLARE or any(
            a.startswith(("-", "+")) and bool(set(a) & set("iEF" + HOLE)) for a in args
        )

    def quote(self, value: str) -> str:
        """``value`` quoted so that it is one literal piece of the current word."""
        frame = self.stack[-1]
        quoted = shlex.quote(value)
        self.prev = "'"  # the quoted value ends with a quote: not a word break
        self._literal(HOLE)
        if frame == "sq":
            return f"'{quoted}'"  # close the quote, add the value, reopen
        if frame == "dq":
            return f'"{quoted}"'
        return quoted
