#!/usr/bin/python3
"""scrape_metrics.py URL -- scrape a /metrics endpoint over HTTP and parse it with the real
Prometheus parser (Debian's python3-prometheus-client); used by tests/test_metrics.c.

Prints one JSON object on stdout:
  {"status": 200, "content_type": "...",
   "families": {NAME: {"type": "counter", "samples": [[sample_name, {labels}, value], ...]}},
   "other_status": <status of GET on the same host's /not-metrics>,
   "post_status": <status of POST to URL>}
Exit status 0 when the scrape parsed, 1 (with the reason on stderr) when it did not: the
exposition is then not one Prometheus would take.
"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def main():
    url = sys.argv[1]
    status, ctype, text = fetch(url)
    out = {"status": status, "content_type": ctype, "families": {}}
    if status != 200:
        print(f"GET {url}: HTTP {status}: {text}", file=sys.stderr)
        return 1
    try:
        for fam in text_string_to_metric_families(text):
            # the parser names a counter family without its _total; key by the TYPE line's name
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            f = out["families"].setdefault(name, {"type": fam.type, "samples": []})
            for s in fam.samples:
                f["samples"].append([s.name, s.labels, s.value])
    except Exception as e:  # the parser's ValueError and friends: not valid exposition text
        print(f"GET {url}: not valid Prometheus text: {e!r}\n{text}", file=sys.stderr)
        return 1
    parts = urllib.parse.urlsplit(url)
    out["other_status"] = fetch(urllib.parse.urlunsplit(parts._replace(path="/not-metrics")))[0]
    out["post_status"] = fetch(url, data=b"x=1")[0]
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
