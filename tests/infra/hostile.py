"""Values for injection tests: whatever a shell line built by concatenation would break on.

Every quoting edge (the wrapper, the tmux pane command, ssh's remote command, docker and fio
argvs) is tested with these, so a new edge is tested with the same set.
"""

HOSTILE = [
    "a b",
    "it's",
    'say "hi"',
    "$(touch PWNED)",
    "`touch PWNED`",
    "x; touch PWNED",
    "line1\nline2",
    "$HOME",
    "\\n",
]
"""Arguments and environment values: spaces, quotes, command substitution, backticks, ``;``, newlines, ``$VAR``."""

HOSTILE_PATH = "/data/my \"set\" 'v2', $(rm -rf ~); `id`"
"""An absolute path with the same hazards (and a comma, which docker's ``--mount`` splits on)."""
