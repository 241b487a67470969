"""The same calls through the Python `etcd3` client against one endpoint,
printed as JSON lines with what any etcd would answer (no member, cluster
or lease ids, which differ between servers). Run by server/tests/clients.rs
against Cairn and against etcd; both transcripts must be equal."""

import json
import sys
import threading

import etcd3


def say(step, **what):
    print(json.dumps({"step": step, **what}, sort_keys=True), flush=True)


def meta(m):
    return {
        "create": m.create_revision,
        "mod": m.mod_revision,
        "version": m.version,
    }


host, port = sys.argv[1].rsplit(":", 1)
c = etcd3.client(host=host, port=int(port), timeout=10)

c.put("foo", "bar")
value, m = c.get("foo")
say("get", value=value.decode(), **meta(m))
prev = c.put("foo", "bar2", prev_kv=True)
say("put prev_kv", prev=prev.prev_kv.value.decode(), revision=prev.header.revision)
for k in ["fa", "fb", "g"]:
    c.put(k, k.upper())
say("prefix", kvs=[(v.decode(), m.key.decode()) for v, m in c.get_prefix("f", sort_order="ascend")])
say("range", kvs=[m.key.decode() for _, m in c.get_range("fa", "g")])
say("missing", value=c.get("nothing")[0])
say("delete", deleted=c.delete("fa"), again=c.delete("fa"))
say("delete prefix", response=c.delete_prefix("f").deleted)

ok, answers = c.transaction(
    compare=[c.transactions.version("t") == 0],
    success=[c.transactions.put("t", "created")],
    failure=[c.transactions.get("t")],
)
say("txn create", succeeded=ok)
ok, answers = c.transaction(
    compare=[c.transactions.value("t") == "created"],
    success=[c.transactions.get("t")],
    failure=[c.transactions.put("t", "other")],
)
say("txn read", succeeded=ok, got=[[v.decode() for v, _ in a] for a in answers])
ok, _ = c.transaction(
    compare=[c.transactions.mod("t") < 2],
    success=[c.transactions.delete("t")],
    failure=[],
)
say("txn failed compare", succeeded=ok, still=c.get("t")[0].decode())

lease = c.lease(60)
c.put("leased", "v", lease=lease)
say("lease", granted=lease.granted_ttl, keys=[k.decode() for k in lease.keys],
    remaining_ok=0 < lease.remaining_ttl <= 60)
lease.refresh()
lease.revoke()
say("lease revoked", value=c.get("leased")[0])

seen = []
done = threading.Event()


def on_event(resp):
    for e in resp.events:
        seen.append((type(e).__name__, e.key.decode(), e.value.decode(), e.mod_revision))
    if len(seen) >= 2:
        done.set()


wid = c.add_watch_callback("w", on_event)
c.put("w", "1")
c.delete("w")
done.wait(10)
c.cancel_watch(wid)
say("watch", events=seen)

events, cancel = c.watch_prefix("p", start_revision=1)
c.put("p1", "x")
first = next(events)
cancel()
say("watch history", event=[type(first).__name__, first.key.decode(), first.value.decode()])

with c.lock("the-lock", ttl=10) as lock:
    say("lock", held=lock.is_acquired())

rev = c.get("t")[1].mod_revision
c.put("t", "again")
c.compact(rev, physical=True)
compacted = []
gone = threading.Event()


def on_compacted(resp):
    if isinstance(resp, Exception):
        compacted.append([type(resp).__name__, resp.compacted_revision])
        gone.set()


try:
    c.add_watch_callback("t", on_compacted, start_revision=rev - 1)
except Exception as e:  # noqa: BLE001 -- the client's own error type
    compacted.append([type(e).__name__, getattr(e, "compacted_revision", None)])
    gone.set()
gone.wait(10)
say("compacted watch", answer=compacted)
say("members", count=len(list(c.members)))
say("status", leader_known=c.status().leader is not None)
