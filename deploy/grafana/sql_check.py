"""SQL for validate.py: the work-time dashboards read only the work-time tables, and every
identifier is one of their columns, an alias, a variable or a known keyword or function."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# The daily work-time analysis (`iotflow worktime`) writes its results into these MySQL tables,
# a contract for that job (README.md). When its DDL is in the tree it is the authority, and the
# list below is used only when that file is absent.
WORKTIME_DDL = os.path.join(REPO, "schemas", "mysql", "device_work_time.sql")
WORK_TIME_TABLES = {
    "device_work_time": {
        "day", "pboxid", "segments", "working_seconds", "first_reading", "last_reading",
        "observed_seconds", "utilisation", "day_share", "readings", "threshold", "computed_at",
    },
    "device_work_time_runs": {
        "day", "status", "started_at", "finished_at", "rows_read", "devices", "message",
    },
}

STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''


def balanced(text):
    """Brackets balance outside string literals (the SQL check's first test)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in re.sub(STRING, '""', text):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def work_time_tables():
    """{table: columns} the dashboards may read: from the DDL when present."""
    if not os.path.exists(WORKTIME_DDL):
        return {t: set(c) for t, c in WORK_TIME_TABLES.items()}
    text = re.sub(r"--[^\n]*", "", open(WORKTIME_DDL, encoding="utf-8").read())
    tables = {}
    for name, body in re.findall(
            r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?\s*\((.*?)\)\s*ENGINE",
            text, re.S | re.I):
        cols = set()
        for line in body.split("\n"):
            m = re.match(r"\s*`?([a-zA-Z_]\w*)`?\s+[A-Za-z]", line)
            if m and m.group(1).upper() not in ("PRIMARY", "KEY", "UNIQUE", "INDEX", "CONSTRAINT"):
                cols.add(m.group(1))
        tables[name] = cols
    if "device_work_time" not in tables:
        raise ValueError(f"{WORKTIME_DDL}: no device_work_time table found")
    return tables


SQL_WORDS = {
    "select", "from", "where", "and", "or", "not", "order", "by", "group", "desc", "asc",
    "limit", "as", "left", "right", "inner", "join", "on", "union", "all", "distinct", "case",
    "when", "then", "else", "end", "null", "is", "in", "between", "having", "count", "sum",
    "avg", "min", "max", "coalesce", "concat", "least", "greatest", "floor", "ceil", "round",
    "timestamp", "date_format", "unix_timestamp", "from_unixtime", "date", "nullif", "if",
}


def sql_problems(raw, known_tables=None):
    problems = []
    if not balanced(raw):
        return ["unbalanced brackets"]
    known_tables = work_time_tables() if known_tables is None else known_tables
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", raw)
    s = re.sub(r"\$\{?\w+\}?(\([^)]*\))?", " ", s)  # variables and macros with their arguments
    tables = re.findall(r"\b(?:from|join)\s+([a-zA-Z_]\w*)", s, re.I)
    columns = set()
    for t in tables:
        if t not in known_tables:
            problems.append(f"reads table {t}, not one of {sorted(known_tables)}")
        else:
            columns |= known_tables[t]
    aliases = {a.lower() for a in re.findall(r"\bas\s+([a-zA-Z_]\w*)", s, re.I)}
    for tok in re.findall(r"(?<![\w.])[a-zA-Z_]\w*(?:\.[a-zA-Z_]\w*)?", s):
        parts = tok.split(".")
        if len(parts) == 2:
            if parts[0].lower() not in aliases:
                problems.append(f"unknown table alias {parts[0]}")
            if parts[1] not in columns and parts[1].lower() not in aliases:
                problems.append(f"unknown column {tok}")
            continue
        low = tok.lower()
        if low in SQL_WORDS or low in aliases or tok in tables or tok in columns:
            continue
        problems.append(f"unknown identifier {tok} (not a column of {', '.join(tables)})")
    return problems
