"""Tests of ini2man.py (the ctest test man_ini2man): the grammar it accepts, the roff it
writes, the malformed examples it refuses with a line number, and the real
repository.ini.example, which must document exactly the keys coregroup/config.c accepts."""

import contextlib
import io
import os
import re
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # coregroup/man/ -> the repository
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import ini2man  # noqa: E402

SMALL = """\
; thing.ini — what a thing reads.
; Lines are "key = value".
;
; A second paragraph.

[alpha]
; the first key
one = 1
; two keys, one comment:
; both of them
two = a-b
three = \\x
; optional: `thing --flag`
;four = /etc/four

[beta]
; .starts with a dot — and an em dash
five = five
"""


def parse(text):
    return ini2man.parse(text, "t.ini")


class Grammar(unittest.TestCase):
    def test_preamble_sections_entries_and_unset_keys(self):
        ex = parse(SMALL)
        self.assertEqual(ex.name, "thing.ini")
        self.assertEqual(ex.what, "what a thing reads")
        self.assertEqual(ex.description, ['Lines are "key = value".', "", "A second paragraph."])
        self.assertEqual([s for s, _ in ex.sections], ["alpha", "beta"])
        alpha = ex.sections[0][1]
        self.assertEqual([e.comment for e in alpha],
                         [["the first key"], ["two keys, one comment:", "both of them"],
                          ["optional: `thing --flag`"]])
        self.assertEqual(alpha[1].keys, [("two", "a-b", True), ("three", "\\x", True)])
        self.assertEqual(alpha[2].keys, [("four", "/etc/four", False)])

    def test_hash_comments_and_hash_unset_keys(self):
        ex = parse("# n.ini - a name\n[s]\n# doc\nk = v\n#j = w\n")
        self.assertEqual(ex.what, "a name")
        self.assertEqual(ex.sections[0][1][0].keys, [("k", "v", True), ("j", "w", False)])


class Roff(unittest.TestCase):
    def setUp(self):
        self.page = ini2man.render(parse(SMALL), "thing.ini.example", "thing 1.0", "May 2025",
                                   "/usr/share/thing/thing.ini.example")
        self.lines = self.page.splitlines()

    def test_header_name_and_sections(self):
        self.assertIn('.TH "THING.INI" "5" "May 2025" "thing 1.0" "File Formats"', self.lines)
        self.assertEqual(self.lines[self.lines.index(".SH NAME") + 1],
                         "thing.ini \\- what a thing reads")
        self.assertIn('.SS "[alpha]"', self.lines)
        self.assertIn('.SS "[beta]"', self.lines)
        self.assertIn(".I /usr/share/thing/thing.ini.example", self.lines)

    def test_one_comment_tags_all_its_keys(self):
        i = self.lines.index("\\fBtwo\\fR = \\fIa\\-b\\fR")
        self.assertEqual(self.lines[i - 1], ".TP")
        self.assertEqual(self.lines[i + 1:i + 5],
                         [".TQ", "\\fBthree\\fR = \\fI\\ex\\fR", "two keys, one comment:",
                          "both of them"])

    def test_unset_key_is_marked(self):
        self.assertIn("\\fBfour\\fR = \\fI/etc/four\\fR (unset\\ in\\ the\\ example)", self.lines)

    def test_escapes(self):
        self.assertIn("optional: \\fBthing \\-\\-flag\\fR", self.lines)
        self.assertIn("\\&.starts with a dot \\(em and an em dash", self.lines)
        self.assertEqual(ini2man.escape("caf\u00e9"), "caf\\[u00E9]")
        self.assertTrue(self.page.isascii())

    def test_empty_comment_line_is_a_new_paragraph(self):
        page = ini2man.render(parse("; n.ini — x\n[s]\n; a\n;\n; b\nk = v\n"), "n", "v", "d", "p")
        self.assertIn("a\n.IP\nb\n", page)


class Refused(unittest.TestCase):
    def refused(self, text, message):
        with self.assertRaises(ini2man.ExampleError) as cm:
            parse(text)
        self.assertIn(message, str(cm.exception))

    def test_malformed_examples_are_named_by_line(self):
        head = "; n.ini — x\n[s]\n"
        self.refused(head + "k = v\n", "t.ini:3: [s] k has no comment documenting it")
        self.refused("; n.ini — x\n; doc\nk = v\n", "t.ini:3: key k outside any section")
        self.refused(head + "; doc\nk = v\nk = w\n", "t.ini:5: [s] k given twice")
        self.refused(head + "; doc\nk = v\n;k = w\n", "t.ini:5: [s] k given twice")
        self.refused(head + "; doc\nk = v\n[s]\n", "t.ini:5: section [s] given twice")
        self.refused(head + "; doc\nk v\n", 't.ini:4: expected "; comment"')
        self.refused(head + ";no space before the text\nk = v\n", "t.ini:3: expected")
        self.refused(head + "; doc\n\nk = v\n", "t.ini:4: a comment documents no key")
        self.refused(head + "; doc\n[t]\n; d\nk = v\n", "t.ini:4: the comment above [t]")
        self.refused(head + "; doc\nk = v\n; dangling\n", "the comment at the end documents no key")
        self.refused("[s]\n; doc\nk = v\n", "t.ini:1: expected a first comment line")
        self.refused("; no name line here\n[s]\n; doc\nk = v\n", "expected a first comment line")
        self.refused("; n.ini — x\n", "no [section]")

    def test_main_reports_and_writes_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            src, out = os.path.join(d, "bad.ini"), os.path.join(d, "bad.5")
            with open(src, "w") as f:
                f.write("; n.ini — x\n[s]\nk = v\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(ini2man.main([src, out]), 1)
            self.assertIn("bad.ini:3: [s] k has no comment", err.getvalue())
            self.assertEqual(os.listdir(d), ["bad.ini"])


class TheRealExample(unittest.TestCase):
    """repository.ini.example is the one source of repository.ini(5)."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, "repository.ini.example"), encoding="utf-8") as f:
            cls.example = ini2man.parse(f.read())
        with open(os.path.join(ROOT, "coregroup", "config.c"), encoding="utf-8") as f:
            cls.accepted = set(re.findall(r'\{"(\w+)", "(\w+)", T_\w+', f.read()))

    def test_documents_exactly_the_keys_config_c_accepts(self):
        self.assertGreaterEqual(len(self.accepted), 20, "config.c's key table was not found")
        documented = {(s, k) for s, entries in self.example.sections
                      for e in entries for k, _, _ in e.keys}
        self.assertEqual(sorted(self.accepted - documented), [], "accepted but not documented")
        self.assertEqual(sorted(documented - self.accepted), [], "documented but not accepted")

    def test_renders_every_key_once(self):
        page = ini2man.render(self.example, "repository.ini.example", "coregroup", "May 2025",
                              "/usr/share/coregroup/repository.ini.example")
        self.assertIn("repository.ini \\- how one core finds", page)
        for section, entries in self.example.sections:
            self.assertEqual(page.count('.SS "[%s]"' % section), 1)
        tags = re.findall(r"^\\fB(\w+)\\fR = ", page, re.M)
        self.assertEqual(len(tags), len(self.accepted))

    def test_main_writes_the_page(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "repository.ini.5")
            argv = [os.path.join(ROOT, "repository.ini.example"), out, "--date", "May 2025",
                    "--version", "coregroup 9"]
            self.assertEqual(ini2man.main(argv), 0)
            with open(out, encoding="ascii") as f:
                self.assertIn('"May 2025" "coregroup 9"', f.read())
            self.assertEqual(os.listdir(d), ["repository.ini.5"])


if __name__ == "__main__":
    unittest.main()
