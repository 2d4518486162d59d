"""``meterline completion bash|zsh|fish``: shell completion scripts made from the parser.

The scripts hold a table of command paths ("meterline customers") and the words that may
follow each (subcommands and flags), plus the choices of flags that take one ("--output"),
so they complete exactly what this version's parser accepts and never run Python per <TAB>.

    source <(meterline completion bash)                     # ~/.bashrc
    meterline completion zsh > "${fpath[1]}/_meterline"     # zsh
    meterline completion fish > ~/.config/fish/completions/meterline.fish
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

SHELLS = ("bash", "zsh", "fish")
ROOT = "meterline"


def walk(
    parser: argparse.ArgumentParser, path: str = ROOT
) -> Iterator[tuple[str, list[str], dict[str, list[str]]]]:
    """(command path, words that may follow it, choices of its flags) for every command."""
    words: list[str] = []
    choices: dict[str, list[str]] = {}
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                words.append(name)
                children.append((name, child))
        elif not action.option_strings and action.choices:  # a positional with choices
            words.extend(str(c) for c in action.choices)
        elif action.option_strings and action.help != argparse.SUPPRESS:
            long = [o for o in action.option_strings if o.startswith("--")]
            words.extend(long or action.option_strings)
            if action.choices:
                for option in action.option_strings:
                    choices[option] = [str(c) for c in action.choices]
    yield path, words, choices
    for name, child in children:
        yield from walk(child, f"{path} {name}")


def _bash_table(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    words, choices = [], []
    for path, follow, options in walk(parser):
        words.append(f'  ["{path}"]="{" ".join(follow)}"')
        for option, values in options.items():
            choices.append(f'  ["{path} {option}"]="{" ".join(values)}"')
    return words, choices


def bash(parser: argparse.ArgumentParser) -> str:
    words, choices = _bash_table(parser)
    return "\n".join(
        [
            "# meterline completion for bash: source <(meterline completion bash)",
            "declare -A _meterline_words=(",
            *words,
            ")",
            "declare -A _meterline_choices=(",
            *choices,
            ")",
            "_meterline() {",
            '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '  local cmdpath="meterline" w i',
            "  for ((i = 1; i < COMP_CWORD; i++)); do",
            '    w="${COMP_WORDS[i]}"',
            "    [[ $w == -* ]] && continue",
            '    [[ -n "${_meterline_words["$cmdpath $w"]+x}" ]] && cmdpath="$cmdpath $w"',
            "  done",
            '  if [[ -n "${_meterline_choices["$cmdpath $prev"]+x}" ]]; then',
            '    COMPREPLY=($(compgen -W "${_meterline_choices["$cmdpath $prev"]}" -- "$cur"))',
            "  else",
            '    local words="${_meterline_words[$cmdpath]}"',
            "    # flags only once a dash is typed",
            '    [[ $cur == -* ]] || words="$(printf "%s\\n" $words | grep -v -- "^-")"',
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "  fi",
            "}",
            "complete -o default -F _meterline meterline",
            "",
        ]
    )


def zsh(parser: argparse.ArgumentParser) -> str:
    words, choices = _bash_table(parser)

    def assoc(lines: list[str]) -> list[str]:
        # zsh: key value pairs inside ( ), the same quoting as bash's [key]=value.
        return [line.replace('  ["', '  "', 1).replace('"]="', '" "', 1) for line in lines]

    return "\n".join(
        [
            "#compdef meterline",
            '# meterline completion for zsh: meterline completion zsh > "${fpath[1]}/_meterline"',
            "typeset -gA _meterline_words _meterline_choices",
            "_meterline_words=(",
            *assoc(words),
            ")",
            "_meterline_choices=(",
            *assoc(choices),
            ")",
            "_meterline() {",
            '  local cmdpath="meterline" w i prev="${words[CURRENT-1]}"',
            "  for ((i = 2; i < CURRENT; i++)); do",
            '    w="${words[i]}"',
            "    [[ $w == -* ]] && continue",
            '    (( ${+_meterline_words[$cmdpath $w]} )) && cmdpath="$cmdpath $w"',
            "  done",
            "  if (( ${+_meterline_choices[$cmdpath $prev]} )); then",
            "    compadd -- ${=_meterline_choices[$cmdpath $prev]}",
            "  else",
            "    local -a all=(${=_meterline_words[$cmdpath]})",
            "    [[ $PREFIX == -* ]] || all=(${all:#-*})",
            '    compadd -- "${all[@]}"',
            "  fi",
            "}",
            'if [[ "$funcstack[1]" == _meterline ]]; then _meterline "$@"; '
            "else compdef _meterline meterline; fi",
            "",
        ]
    )


def fish(parser: argparse.ArgumentParser) -> str:
    table = list(walk(parser))
    paths = " ".join(f"'{path}'" for path, _, _ in table)
    lines = [
        "# meterline completion for fish:",
        "#   meterline completion fish > ~/.config/fish/completions/meterline.fish",
        f"set -g __meterline_paths {paths}",
        "function __meterline_path",
        "    set -l path meterline",
        "    for w in (commandline -opc)[2..-1]",
        "        string match -q -- '-*' $w; and continue",
        '        contains -- "$path $w" $__meterline_paths; and set path "$path $w"',
        "    end",
        "    echo $path",
        "end",
        "complete -c meterline -f",
    ]
    for path, follow, options in table:
        condition = f"test (__meterline_path) = '{path}'"
        commands = [w for w in follow if not w.startswith("-")]
        if commands:
            lines.append(f"complete -c meterline -n \"{condition}\" -a '{' '.join(commands)}'")
        for flag in (w for w in follow if w.startswith("--")):
            values = options.get(flag)
            extra = f" -r -a '{' '.join(values)}'" if values else ""
            lines.append(f'complete -c meterline -n "{condition}" -l {flag[2:]}{extra}')
    lines.append("")
    return "\n".join(lines)


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](parser)
