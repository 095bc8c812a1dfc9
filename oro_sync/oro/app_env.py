"""Reading an Oro application's settings files (pure: text in, values out).

Oro 5.1+ keeps its settings in Symfony dotenv files at the application's
root, later ones overriding earlier ones, real environment variables
overriding them all::

    .env-app  .env-app.local  .env-app.$ORO_ENV  .env-app.$ORO_ENV.local

(``composer dump-env`` compiles them into ``.env-app.local.php``, which is
then read instead).  Oro 3.x/4.x keep them in ``parameters.yml``
(``config/`` in 4.x, ``app/config/`` in 3.x).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

import yaml

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\\?\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_PHP_PAIR = re.compile(r"'((?:[^'\\]|\\.)*)'\s*=>\s*(?:'((?:[^'\\]|\\.)*)'|(true|false|null|-?\d+))", re.I)
#: ``\x`` in double quotes -> a placeholder (so ``\$`` is not expanded) -> the character.
_ESCAPE_CODES = {"n": "n", "r": "r", "t": "t", '"': "q", "\\": "b", "$": "D"}
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "q": '"', "b": "\\", "D": "$"}

DOTENV_FILES = (".env-app", ".env-app.local")
PARAMETERS_FILES = ("config/parameters.yml", "app/config/parameters.yml")


class EnvFileError(ValueError):
    """A settings file that cannot be read (with its name and line)."""


def _expand(text: str, lookup: Callable[[str], str | None]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0).startswith("\\"):
            return m.group(0)[1:]
        name = m.group(1) or m.group(3)
        value = lookup(name)
        if not value and m.group(2) is not None:
            return m.group(2)
        return value or ""

    return _VARIABLE.sub(sub, text)


def parse_dotenv(text: str, lookup: Callable[[str], str | None] = lambda name: None,
                 source: str = ".env") -> dict[str, str]:
    """The variables a dotenv file sets, as Symfony's Dotenv reads them:
    ``export`` allowed, ``#`` comments, ``'single'`` quotes literal,
    ``"double"`` quotes with escapes and ``$VAR``/``${VAR}``/``${VAR:-default}``
    expanded (also unquoted), multi-line quoted values.  ``lookup`` gives
    variables set elsewhere (the environment, other files), which win over
    this file's own."""
    values: dict[str, str] = {}

    def resolve(name: str) -> str | None:
        found = lookup(name)  # the environment (and other files) first
        return found if found is not None else values.get(name)

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise EnvFileError(f"{source}:{number}: not NAME=value")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote, body = rest[0], rest[1:]
            while _closing(body, quote) < 0 and i < len(lines):  # a multi-line value
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            if end < 0:
                raise EnvFileError(f"{source}:{number}: {name}: missing closing {quote}")
            raw = body[:end]
            if quote == "'":
                value = raw
            else:
                coded = re.sub(r'\\([nrt"\\$])', lambda m: "\0" + _ESCAPE_CODES[m.group(1)], raw)
                value = _expand(coded, resolve)
                value = re.sub("\0(.)", lambda m: _DOUBLE_ESCAPES[m.group(1)], value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
            value = _expand(value, resolve)
        values[name] = value
    return values


def _closing(body: str, quote: str) -> int:
    """Where the unescaped closing quote is in ``body``, or -1."""
    j = 0
    while j < len(body):
        c = body[j]
        if c == "\\" and quote == '"':
            j += 2
            continue
        if c == quote:
            return j
        j += 1
    return -1


def parse_dumped_env(text: str) -> dict[str, str]:
    """The ``return array(...)`` of ``.env-app.local.php`` (``composer dump-env``)."""
    values: dict[str, str] = {}
    for m in _PHP_PAIR.finditer(text):
        key = re.sub(r"\\(.)", r"\1", m.group(1))
        if m.group(2) is not None:
            values[key] = re.sub(r"\\([\\'])", r"\1", m.group(2))
        else:
            literal = m.group(3).lower()
            values[key] = {"true": "1", "false": "", "null": ""}.get(literal, literal)
    return values


def load_app_env(app_dir: str, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Oro 5.1+'s variables for ``app_dir``: (values, files read, in order).

    Real environment variables (``environ``) win over every file.
    """
    files: list[str] = []
    dumped = os.path.join(app_dir, ".env-app.local.php")
    values: dict[str, str] = {}
    if os.path.isfile(dumped):
        values.update(parse_dumped_env(_read(dumped)))
        files.append(".env-app.local.php")
    else:
        # Two passes: the second resolves ${VAR} against the final values, so
        # ORO_DB_DSN=${ORO_DB_URL} in .env-app follows an ORO_DB_URL that
        # .env-app.local overrides (what users expect of these files).
        final: dict[str, str] = {}
        for _ in range(2):
            values, files = {}, []

            def lookup(name: str) -> str | None:
                return environ.get(name, final.get(name, values.get(name)))

            def read(name: str) -> None:
                path = os.path.join(app_dir, name)
                if os.path.isfile(path):
                    values.update(parse_dotenv(_read(path), lookup, name))
                    files.append(name)

            for name in DOTENV_FILES:
                read(name)
            env = environ.get("ORO_ENV") or values.get("ORO_ENV") or "prod"
            read(f".env-app.{env}")
            read(f".env-app.{env}.local")
            final = dict(values)
    for name in list(values):
        if name in environ:
            values[name] = environ[name]
    for name, value in environ.items():
        if name.startswith("ORO_"):
            values[name] = value
    return values, files


def load_parameters(app_dir: str) -> tuple[dict[str, Any], str | None]:
    """Oro 3.x/4.x ``parameters:`` of ``parameters.yml`` and the file's
    name relative to ``app_dir`` (({}, None) when there is none)."""
    for name in PARAMETERS_FILES:
        path = os.path.join(app_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            data = yaml.safe_load(_read(path)) or {}
        except yaml.YAMLError as e:
            raise EnvFileError(f"{name}: invalid YAML: {e}") from None
        parameters = data.get("parameters") if isinstance(data, dict) else None
        if not isinstance(parameters, dict):
            raise EnvFileError(f"{name}: no 'parameters' mapping")
        return parameters, name
    return {}, None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise EnvFileError(f"{path}: cannot read ({e})") from None
