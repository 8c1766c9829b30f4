"""ShellTask placeholders against real shells: a corpus of payloads in every kind of context.

The invariant (issue 13): for every payload, every template and every shell, either the
command is refused before any shell runs, or the shell runs it and the payload's marker file
is not created. Each shell gets one driver script that runs every rendered command in a
subshell (``( eval ... )``), so the corpus costs one process per shell, not thousands.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.tasks._context import TaskConfigError
from stabilize.tasks._placeholders import render_command

PAYLOADS = [
    "$(touch {M})",
    "`touch {M}`",
    "a[$(touch {M})]",
    "x[$(touch {M})]",
    "a[`touch {M}`]",
    "1+a[$(touch {M})]",
    "x=a[$(touch {M})]",
    "$((a[$(touch {M})]))",
    "a[$(touch {M})]=1",
    "; touch {M}",
    "x && touch {M}",
    "x || touch {M}",
    "x | touch {M}",
    "x & touch {M}",
    "x\ntouch {M}",
    "\ntouch {M}\n",
    "x\rtouch {M}",
    "'; touch {M}; '",
    '"; touch {M}; "',
    "\\'; touch {M}; #",
    "\\",
    "'",
    '"',
    "x\\",
    "*",
    "~",
    "~root/x",
    "$IFS",
    "${IFS}touch${IFS}{M}",
    "-e",
    "-c touch {M}",
    "--help",
    "); touch {M}; (",
    ")); touch {M}; ((",
    "]]; touch {M}; [[ x",
    "1 ]; touch {M}; [ 1",
    "}}; touch {M}; {{",
    "<(touch {M})",
    ">(touch {M})",
    "$'\\x27'; touch {M}",
    "*(e:touch {M}:)",
    "\\$(touch {M})",
    "%(e:touch {M}:)",
    "!x; touch {M}",
    "#; touch {M}",
    "\x07\x1b[31m\x7f\x01 control; touch {M}",
    "ünïcødé ☃ 𝄞; touch {M}",
    "x" * 100_000 + "$(touch {M})",
    "",
    "12",
    "-7",
]
"""Values that try to run ``touch {M}`` (the marker path) or to break the quoting."""

CONTEXTS = [
    # words, quotes and assignments
    "echo {v}",
    "echo '{v}'",
    'echo "{v}"',
    'echo "<{v}>" pre{v}post',
    "printf '%s\\n' {v}",
    "printf %d {v}",
    'x={v}; echo "$x"',
    'export X={v}; echo "$X"',
    "FOO={v} true",
    'a=({v}); echo "${{a[@]}}"',
    'x[1]={v}; echo "$x"',
    'for x in {v}; do echo "$x"; done',
    "case {v} in x) echo x;; esac",
    "echo {v} > /dev/null",
    "echo x 2>&1 {v}",
    "cat <(echo {v})",
    'f() {{ echo "$1"; }}; f {v}',
    'set -- {v}; echo "$1"',
    "sh -c 'echo \"$1\"' sh {v}",
    "bash -c 'printf %s \"$1\"' bash {v}",
    # test and [ ]
    "[ {v} = x ]",
    "[ {v} -eq 3 ]",
    "test {v} -gt 1",
    "[ -v {v} ]",
    "test -v {v}",
    'x={v}; [ "$x" -eq 1 ]',
    # arithmetic and [[ ]]
    "[[ {v} -gt 3 ]]",
    "[[ 3 -lt {v} ]]",
    "[[ {v} == x ]]",
    "[[ -v {v} ]]",
    "(( {v} ))",
    '(( "{v}" ))',
    "echo $(( {v} ))",
    "echo $[ {v} ]",
    'echo "$[ {v} ]"',
    "let {v}",
    "let x={v}",
    "for ((i={v}; i<1; i++)); do :; done",
    "x={v}; (( x ))",
    "x={v}; echo $(( x + 1 ))",
    "x={v}; [[ $x -gt 1 ]]",
    "set -- {v}; echo $(( $1 ))",
    "sh -c 'echo $(( $1 ))' sh {v}",
    "for x in {v}; do (( n++ )); done",
    # builtins whose arguments zsh evaluates as arithmetic
    "printf '%5.2f|%x' {v} {v}",
    "print -f %d {v}",
    'x={v}; printf %d "$x"',
    "printf {v} 1",
    "shift {v}",
    "exit {v}",
    "f() {{ return {v}; }}; f",
    "for x in 1; do break {v}; done",
    "repeat {v} echo",
    'x={v}; shift "$x"',
    "read -t {v} y",
    'x={v}; read -t "$x" y',
    # declarations, names and subscripts
    "declare -i x={v}",
    "typeset -i x={v}",
    "f() {{ local -i x={v}; }}; f",
    "declare -i n; n={v}",
    "declare -ai a=({v})",
    "declare {v}=1",
    "export {v}=1",
    "f() {{ local {v}=1; }}; f",
    "readonly {v}=1",
    "declare -n r={v}; echo $r",
    "x[{v}]=1",
    "a=([{v}]=1)",
    "echo x[{v}]",
    "x={v}; y=(1 2); echo ${{y[x]}}",
    "x={v}; y=abc; echo ${{y:x}}",
    "x={v}; echo ${{!x}}",
    "x={v}; echo ${{x@P}}",
    "x={v}; echo ${{~x}}",
    "x={v}; echo ${{(e)x}}",
    "x={v}; y=(1 2); echo $y[x]",
    "read {v}",
    "echo x | read {v}",
    "unset {v}",
    "printf -v {v} %s 1",
    "print -v {v} x",
    "getopts a {v}",
    "mapfile {v}",
    "for {v} in 1; do :; done",
    # quoting the lexer must follow exactly (or refuse after)
    "echo $'a b' {v}",
    "echo $'\\'' {v}",
    "echo ${{x:-'}}'}} {v}",
    "echo \"${{x:-'}}'}}\" {v}",
    "echo $(echo ')') {v}",
    'echo "$(echo "a)")" {v}',
    "echo $(echo # )\n) {v}",
    "echo $(case x in x) echo ok;; esac) {v}",
    "echo `echo '`'` {v}",
    "echo \\' {v}",
    "c=echo; $c {v}",
    # text that is parsed again
    "trap '' TERM; echo {v}",
    "x={v}; eval 'echo $(( x ))'",
    "x={v}; trap 'echo $(( x ))' EXIT",
    "x={v}; y=x; eval 'echo $'\"$y\"",
    "eval {v}",
    'eval "echo {v}"',
    "trap {v} EXIT",
    "sh -c {v}",
    'bash -c "echo {v}"',
    "sh -c 'echo {v}'",
    "sudo sh -c {v}",
    "source {v}",
    ". {v}",
    "{v}",
    "{v} x",
    "command {v}",
]
"""Command templates: every kind of place a placeholder can stand in."""

SHELLS = ["/bin/sh", "/bin/bash", "zsh"]


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install -y {name}); .ci/run should")
    return path


@pytest.mark.parametrize("shell_name", SHELLS)
def test_no_payload_runs_in_any_context(tmp_path: Path, shell_name: str) -> None:
    shell = _shell(shell_name)
    markers = tmp_path / "markers"
    markers.mkdir()
    lines: list[str] = []
    ran = refused = 0
    for p, payload in enumerate(PAYLOADS):
        for c, template in enumerate(CONTEXTS):
            marker = markers / f"p{p}_c{c}"
            value = payload.replace("{M}", str(marker))
            try:
                argv, _, _ = render_command({"command": template, "v": value, "shell": shell})
            except TaskConfigError:
                refused += 1
                continue
            assert argv[:2] == [shell, "-c"]
            ran += 1
            # One subshell each: an error, an `exit` or a trap stays inside it.
            lines.append(f"( eval {shlex.quote(argv[2])} ) </dev/null >/dev/null 2>&1")
    done = tmp_path / "done"
    lines.append(f"echo finished > {shlex.quote(str(done))}")
    script = tmp_path / "driver"
    script.write_text("\n".join(lines) + "\n")
    completed = subprocess.run(
        [shell, str(script)], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.read_text() == "finished\n", completed.stderr[-2000:]
    created = sorted(m.name for m in markers.iterdir())
    found = [
        (PAYLOADS[int(p[1:])][:60], CONTEXTS[int(c[1:])])
        for p, c in (name.split("_") for name in created)
    ]
    assert found == [], f"payloads ran: {found}"
    assert ran + refused == len(PAYLOADS) * len(CONTEXTS)
    assert ran > len(PAYLOADS) * 20  # most plain contexts do run
    assert refused > len(PAYLOADS) * 20


def test_the_driver_would_see_a_payload_that_runs(tmp_path: Path) -> None:
    # The corpus's own check: the same driver line runs an unquoted payload.
    marker = tmp_path / "ran"
    line = f"( eval {shlex.quote(f'echo $(touch {marker})')} ) </dev/null >/dev/null 2>&1"
    script = tmp_path / "driver"
    script.write_text(line + "\n")
    subprocess.run(["/bin/sh", str(script)], check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("shell_name", SHELLS)
def test_quoted_values_round_trip_through_the_shell(tmp_path: Path, shell_name: str) -> None:
    shell = _shell(shell_name)
    values = [p.replace("{M}", "/nonexistent/m") for p in PAYLOADS if p]
    out = tmp_path / "out"
    for value in values:
        argv, _, _ = render_command(
            {"command": "printf %s {v} > {o}", "v": value, "o": str(out), "shell": shell}
        )
        subprocess.run(argv, check=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.read_bytes() == value.encode(), value[:60]


@pytest.mark.parametrize("shell_name", SHELLS)
def test_subscript_payloads_through_real_shell_invocations(tmp_path: Path, shell_name: str) -> None:
    # The driver evals in subshells; here the worst payloads run exactly as ShellTask runs
    # them (`shell -c <rendered>`), one process per context.
    shell = _shell(shell_name)
    marker = tmp_path / "ran"
    for payload in ("a[$(touch {M})]", "a[$(touch {M})]=1"):
        value = payload.replace("{M}", str(marker))
        for template in CONTEXTS:
            try:
                argv, _, _ = render_command({"command": template, "v": value, "shell": shell})
            except TaskConfigError:
                continue
            subprocess.run(
                argv, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert not marker.exists(), (payload, template)


@given(value=st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
@settings(max_examples=60, deadline=None)
@example(value="a[$(touch /nonexistent/m)]")
@example(value="'\\''\"$`\n")
def test_any_text_round_trips_through_sh(value: str) -> None:
    # The property behind the corpus, with real processes for a sample of arbitrary text.
    argv, _, _ = render_command({"command": "printf %s {v}", "v": value})
    out = subprocess.run(argv, check=True, capture_output=True, timeout=60).stdout
    assert out == value.encode()
