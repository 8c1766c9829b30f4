"""ShellTask without processes: command rendering, placeholder safety, validation, masking."""

from __future__ import annotations

import shlex
from datetime import timedelta
from typing import Any

import pytest

from stabilize import StageExecution
from stabilize.tasks._context import TaskConfigError, mask_capped
from stabilize.tasks._placeholders import fill_placeholders, render_command
from stabilize.tasks.shell import ShellTask

EVIL = [
    "x; touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a'b\"c",
    "'; touch /tmp/pwned; '",
    '"; touch /tmp/pwned; "',
    "line\ntouch /tmp/pwned",
    "x\ntouch /tmp/pwned #",
    "${IFS}touch${IFS}/tmp/pwned",
    "\\'; touch /tmp/pwned",
    "",
]


def stage(context: dict[str, Any]) -> StageExecution:
    return StageExecution(ref_id="s", type="shell", name="s", context=context)


def render(command: Any, **context: Any) -> list[str]:
    return render_command({"command": command, **context})[0]


@pytest.mark.parametrize("value", EVIL)
def test_unquoted_placeholder_is_one_quoted_word(value: str) -> None:
    argv = render("echo {v} end", v=value)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert shlex.split(argv[2]) == ["echo", value, "end"]


@pytest.mark.parametrize("value", EVIL)
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("echo '<{v}>'", "<{}>"),
        ('echo "<{v}>"', "<{}>"),
        ("echo pre{v}post", "pre{}post"),
        ("echo --opt={v}", "--opt={}"),
    ],
)
def test_placeholder_inside_quotes_stays_in_its_word(
    value: str, template: str, expected: str
) -> None:
    argv = render(template, v=value)
    # shlex reads quotes the way a POSIX shell does: the value is one literal piece.
    assert shlex.split(argv[2]) == ["echo", expected.format(value)]


@pytest.mark.parametrize("value", EVIL)
def test_argument_list_fills_within_each_argument(value: str) -> None:
    argv = render(["printf", "%s|", "--name={v}", "{v}"], v=value)
    assert argv == ["printf", "%s|", f"--name={value}", value]


@pytest.mark.parametrize("value", EVIL)
def test_shell_false_splits_the_template_before_filling(value: str) -> None:
    argv = render("printf '%s|' '{v} x' {v}", v=value, shell=False)
    assert argv == ["printf", "%s|", f"{value} x", value]


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("echo $(cat {v})", "command substitution"),
        ("echo `cat {v}`", "command substitution"),
        ('echo "$(date) {v}"', "double-quoted string holding a command substitution"),
        ("echo ${v}", "right after '$'"),
        ("echo hi # {v}", "comment"),
        ("cat <<EOF\n{v}\nEOF", "here-document"),
        ("echo \\{v}", "backslash"),
        ("echo $(( {v} + 1 ))", "command substitution"),
    ],
)
def test_placeholders_where_quoting_cannot_be_trusted_are_refused(template: str, why: str) -> None:
    with pytest.raises(TaskConfigError, match="placeholder \\{v\\}") as info:
        render(template, v="x")
    assert why in str(info.value)


def test_placeholder_after_a_closed_substitution_is_allowed() -> None:
    argv = render("echo $(date) '{v}' ${{HOME}} {v}", v="a b")
    assert shlex.split(argv[2])[-1] == "a b"
    assert "${HOME}" in argv[2]


def test_unknown_placeholder_names_the_key() -> None:
    with pytest.raises(TaskConfigError, match=r"\{missing\}.*names no context key"):
        render("echo {missing}")


def test_literal_braces_escape_as_doubled_braces() -> None:
    argv = render("awk '{{print $1}}' {f}", f="a b")
    assert shlex.split(argv[2]) == ["awk", "{print $1}", "a b"]


def test_bad_placeholder_syntax_is_a_config_error() -> None:
    with pytest.raises(TaskConfigError, match="not a context key name"):
        render("awk '{print $1}'")
    with pytest.raises(TaskConfigError, match="format spec"):
        render("echo {v!r}", v=1)
    with pytest.raises(TaskConfigError, match="unbalanced"):
        render("echo {v", v=1)


def test_values_are_rendered_as_text() -> None:
    context = {"n": 3, "f": 1.5, "t": True, "none": None, "obj": {"a": [1, 2]}}
    assert fill_placeholders("{n}|{f}|{t}|{none}|{obj}", context) == '3|1.5|true||{"a":[1,2]}'


def test_dotted_placeholders_walk_nested_mappings() -> None:
    assert fill_placeholders("{build.id}", {"build": {"id": 7}}) == "7"
    assert fill_placeholders("{a.b}", {"a.b": "flat", "a": {"b": "nested"}}) == "flat"


def test_shell_path_and_shell_validation() -> None:
    assert render("echo hi", shell="/bin/bash")[:2] == ["/bin/bash", "-c"]
    with pytest.raises(TaskConfigError, match="'shell' applies to string commands only"):
        render(["echo"], shell=True)
    with pytest.raises(TaskConfigError, match="'shell' must be true, false or the path"):
        render("echo", shell=3)
    with pytest.raises(TaskConfigError, match="does not quote like a POSIX shell"):
        render("echo {v}", v="x", shell="/usr/bin/fish")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({}, "'command' is required"),
        ({"command": ""}, "'command' must not be empty"),
        ({"command": []}, "'command' must not be an empty list"),
        ({"command": 5}, "'command' must be a string or a list"),
        ({"command": ["a", {"b": 1}]}, "'command' must be a string or a list"),
        ({"command": "true", "timeout": "soon"}, "'timeout' must be a number"),
        ({"command": "true", "timeout": 0}, "'timeout' must be greater than 0"),
        ({"command": "true", "expected_codes": ["0"]}, "'expected_codes' must be a non-empty"),
        ({"command": "true", "max_output_size": -1}, "'max_output_size' must be at least 0"),
        ({"command": "true", "env": ["A=1"]}, "'env' must be a mapping"),
        ({"command": "true", "secrets": "token"}, "'secrets' must be a list of strings"),
        ({"command": "true", "binary": "yes"}, "'binary' must be true or false"),
        ({"command": "true", "cwd": "/no/such/dir/anywhere"}, "'cwd' must be an existing"),
        ({"command": "echo {nope}"}, r"\{nope\}"),
    ],
)
def test_bad_configuration_fails_before_anything_runs(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskConfigError, match=message):
        ShellTask().execute(stage(context))


def test_engine_timeout_is_larger_than_the_task_timeout() -> None:
    task = ShellTask()
    limit = task.get_execution_timeout(stage({"command": "true", "timeout": 10}))
    assert limit is not None
    assert limit > timedelta(seconds=10 + task.kill_grace)
    default = task.get_execution_timeout(stage({"command": "true", "timeout": "bad"}))
    assert default is not None
    assert default > timedelta(seconds=60)


def test_hooks_set_the_cancellation_token() -> None:
    from stabilize.cancellation import CancellationToken

    s = stage({"command": "true"})
    s._cancel_token = CancellationToken()
    assert ShellTask().on_cancel(s) is None
    assert s._cancel_token.is_cancelled
    t = stage({"command": "true"})
    t._cancel_token = CancellationToken()
    assert ShellTask().on_timeout(t) is None
    assert t._cancel_token.is_cancelled


def test_mask_capped_hides_secrets_and_fragments_at_cuts() -> None:
    assert mask_capped("token=hunter2!", ["hunter2"], cut_end=False) == "token=***!"
    assert mask_capped("token=hunt", ["hunter2"], cut_end=True) == "token=***"
    assert mask_capped("ter2 rest", ["hunter2"], cut_end=False, cut_start=True) == "*** rest"
    assert mask_capped("token=hunt", ["hunter2"], cut_end=False) == "token=hunt"
