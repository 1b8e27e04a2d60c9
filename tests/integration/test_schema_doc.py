"""README.md's column reference is what kohaku-schema-doc makes from the schema's declarative
tables (src/sora/schema_table.c), as config.example.ini is what `kohaku --config-example`
prints. After a schema change: build/kohaku-schema-doc --update README.md"""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.dirname(os.environ.get("KOHAKU_BIN", os.path.join(ROOT, "build", "kohaku")))
TOOL = os.path.join(BUILD, "kohaku-schema-doc")
BEGIN = "<!-- BEGIN column reference (kohaku-schema-doc --update README.md) -->\n"
END = "<!-- END column reference -->\n"


def readme_reference():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README.md lost its markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_readme_column_reference_is_current():
    assert os.path.exists(TOOL), f"{TOOL} is not built"
    out = subprocess.run([TOOL], capture_output=True, text=True, timeout=30, check=True)
    assert readme_reference() == out.stdout, (
        "README.md's column reference is not what the schema says; regenerate it with "
        f"{os.path.relpath(TOOL, ROOT)} --update README.md")


def test_reference_lists_every_table_and_member_source():
    ref = readme_reference()
    for table in ("sora_connection", "sora_node", "sora_report", "rtc_inbound_rtp_stream_stats",
                  "rtc_other_stats", "erlang_vm_memory_stats", "node_other_stats"):
        assert f"#### `{table}`\n" in ref
    assert ("| `bytes_received` | INTEGER | bigint | `RTCInboundRtpStreamStats.bytesReceived` |"
            in ref)
    assert "| `jitter` | REAL | double precision | `RTCReceivedRtpStreamStats.jitter` |" in ref
    assert "| `first_seen` | TEXT NOT NULL | timestamptz NOT NULL | the report's `timestamp` " \
           "| the earliest |" in ref
