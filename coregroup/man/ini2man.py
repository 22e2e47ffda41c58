#!/usr/bin/env python3
"""ini2man.py — repository.ini(5) from repository.ini.example, so the example stays the one
place where every key is documented.

The example's layout is the input grammar (each line is one of these, or the file is refused):

    ; text          a comment line; the comment before the first section is the preamble:
                    its first line "repository.ini — WHAT" is the NAME line, the rest the
                    DESCRIPTION
    [section]       a section: one subsection of KEYS
    key = value     a key the example sets
    ;key = value    a key the example leaves unset (no space after the ";")
    (blank)         ends a comment (in the preamble: a paragraph break); an empty ";" line
                    in a key's comment starts a new paragraph

Comment lines, then the keys right after them, make one entry: the keys are the entry's tags
(with the example's value) and the comment is their description, so a comment that documents
two keys at once (attempts and interval_ms) stays one paragraph. A key with no comment above
it, a key outside a section, a key given twice in a section and any other line are errors:
the page must never silently lose part of the documentation. Text is escaped for roff
(backslashes, leading dots and quotes, hyphens as \\-, non-ASCII as \\[uXXXX]); `code` in
backquotes is set in bold.

It deliberately does not read config.c: what a key means is written once, in the example.

    ini2man.py EXAMPLE OUTPUT [--version "coregroup 0.1.0"] [--example-path PATH]
               [--date "MONTH YEAR"]     (default: $SOURCE_DATE_EPOCH, else today)
Exit status: 0 written, 1 the example is malformed (file:line: reason on stderr), 2 usage.
"""

import argparse
import datetime
import os
import re
import sys

SECTION = re.compile(r"^\[([A-Za-z0-9_.-]+)\]\s*$")
KEY = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")
UNSET_KEY = re.compile(r"^[;#]([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")
COMMENT = re.compile(r"^[;#](?:\s(.*?))?\s*$")

SEE_ALSO = ["coregroupd(1)", "cgctl(1)", "cg-busd(1)", "cg-watch(1)", "cg-migrate(1)"]


class ExampleError(Exception):
    """A line of the example that does not fit the grammar; str() is "file:line: reason"."""


class Entry:
    """One comment and the keys it documents: keys is a list of (name, value, is_set)."""

    def __init__(self, comment):
        self.comment = comment
        self.keys = []


class Example:
    """The parsed example: name line, description lines, and [(section, [Entry])]."""

    def __init__(self, name, what, description, sections):
        self.name = name
        self.what = what
        self.description = description
        self.sections = sections


def parse(text, source="repository.ini.example"):
    """Parse the example's text; raises ExampleError naming the line on any malformed input."""
    preamble = []
    sections = []
    comment = []  # comment lines not yet attached to keys
    entry = None  # the entry keys are being added to, or None
    seen = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()

        def fail(reason, lineno=lineno):
            raise ExampleError("%s:%d: %s" % (source, lineno, reason))

        if not line.strip():
            if comment and sections:
                fail("a comment documents no key (blank line before any key)")
            comment = []
            entry = None
            if not sections and preamble and preamble[-1] != "":
                preamble.append("")  # paragraph break in the description
            continue
        m = SECTION.match(line)
        if m:
            if comment and sections:
                fail("the comment above [%s] documents no key" % m.group(1))
            if any(name == m.group(1) for name, _ in sections):
                fail("section [%s] given twice" % m.group(1))
            sections.append((m.group(1), []))
            comment, entry = [], None
            continue
        m = KEY.match(line) or UNSET_KEY.match(line)
        if m:
            if not sections:
                fail("key %s outside any section" % m.group(1))
            section, entries = sections[-1]
            if (section, m.group(1)) in seen:
                fail("[%s] %s given twice" % (section, m.group(1)))
            seen.add((section, m.group(1)))
            if comment:
                entry = Entry(comment)
                entries.append(entry)
                comment = []
            elif entry is None:
                fail("[%s] %s has no comment documenting it" % (section, m.group(1)))
            entry.keys.append((m.group(1), m.group(2), not line.startswith((";", "#"))))
            continue
        m = COMMENT.match(line)
        if m:
            if not sections:
                preamble.append(m.group(1) or "")
            else:
                entry = None
                comment.append(m.group(1) or "")
            continue
        fail('expected "; comment", "[section]", "key = value" or ";key = value"')
    if comment:
        raise ExampleError("%s: the comment at the end documents no key" % source)
    if not sections:
        raise ExampleError("%s: no [section]" % source)
    while preamble and preamble[-1] == "":
        preamble.pop()
    if not preamble:
        raise ExampleError('%s:1: expected a first comment line "NAME — what it is"' % source)
    m = re.match(r"^(\S+)\s+(?:—|--?)\s+(.+)$", preamble[0])
    if not m:
        raise ExampleError('%s:1: expected a first comment line "NAME — what it is"' % source)
    what = m.group(2).rstrip(".")
    return Example(m.group(1), what, preamble[1:], sections)


def escape(text):
    """Roff text for one input line: escapes, \\- for hyphens, bold `code`, ASCII only."""
    out = []
    for part in re.split(r"(`[^`]+`)", text):
        bold = part.startswith("`") and part.endswith("`") and len(part) > 1
        if bold:
            part = part[1:-1]
        s = part.replace("\\", "\\e").replace("-", "\\-")
        s = "".join(c if ord(c) < 128 else "\\(em" if c == "—" else "\\[u%04X]" % ord(c)
                    for c in s)
        out.append("\\fB%s\\fR" % s if bold else s)
    s = "".join(out)
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


def render(ex, source, version, date, example_path):
    """The whole page as roff text."""
    title = ex.name.upper()
    lines = [
        '.\\" Generated by man/ini2man.py from %s: edit that, not this page.' % source,
        '.TH "%s" "5" "%s" "%s" "File Formats"' % (title, date, version),
        ".SH NAME",
        "%s \\- %s" % (escape(ex.name), escape(ex.what)),
        ".SH SYNOPSIS",
        ".I %s" % escape(ex.name),
        ".SH DESCRIPTION",
    ]
    for d in ex.description:
        lines.append(".PP" if d == "" else escape(d))
    lines += [
        ".PP",
        "Each key is shown with the value the example file gives it; a key marked",
        "\\(lqunset in the example\\(rq is commented out there.",
        ".SH KEYS",
    ]
    for section, entries in ex.sections:
        lines.append('.SS "[%s]"' % escape(section))
        for entry in entries:
            for i, (key, value, is_set) in enumerate(entry.keys):
                lines.append(".TP" if i == 0 else ".TQ")
                tag = "\\fB%s\\fR = \\fI%s\\fR" % (escape(key), escape(value))
                lines.append(tag if is_set else tag + " (unset\\ in\\ the\\ example)")
            lines += [escape(c) if c else ".IP" for c in entry.comment]
    lines += [".SH FILES", ".TP", ".I %s" % escape(example_path),
              "an example with every key, from which this page is generated", ".SH SEE ALSO"]
    lines.append(",\n".join(".BR %s (%s)" % (escape(p[:-3]), p[-2]) for p in SEE_ALSO))
    return "\n".join(lines) + "\n"


def page_date(arg):
    if arg:
        return arg
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%B %Y")  # as help2man dates the program pages


def main(argv):
    ap = argparse.ArgumentParser(description="repository.ini(5) from repository.ini.example")
    ap.add_argument("example")
    ap.add_argument("output")
    ap.add_argument("--version", default="coregroup")
    ap.add_argument("--example-path", default="repository.ini.example")
    ap.add_argument("--date")
    args = ap.parse_args(argv)
    try:
        with open(args.example, encoding="utf-8") as f:
            ex = parse(f.read(), args.example)
    except (OSError, UnicodeDecodeError) as e:
        print("ini2man.py: %s: %s" % (args.example, e), file=sys.stderr)
        return 1
    except ExampleError as e:
        print("ini2man.py: %s" % e, file=sys.stderr)
        return 1
    text = render(ex, os.path.basename(args.example), args.version, page_date(args.date),
                  args.example_path)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
