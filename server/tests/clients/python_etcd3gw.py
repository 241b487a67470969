"""The same calls through OpenStack's `etcd3gw` client, which speaks
etcd's JSON gateway (`/v3/...` over HTTP), against one endpoint, printed
as JSON lines with what any etcd would answer (no member, cluster or
lease ids). Run by server/tests/clients.rs against Cairn and against
etcd; both transcripts must be equal."""

import json
import sys
import threading

from etcd3gw.client import Etcd3Client


def say(step, **what):
    print(json.dumps({"step": step, **what}, sort_keys=True, default=text), flush=True)


def text(o):
    return o.decode() if isinstance(o, bytes) else str(o)


host, port = sys.argv[1].rsplit(":", 1)
c = Etcd3Client(host=host, port=int(port), timeout=10)

say("put", ok=c.put("foo", "bar"))
say("get", values=c.get("foo"))
with_meta = c.get("foo", metadata=True)
say("get with metadata", value=with_meta[0][0].decode(),
    mod=with_meta[0][1]["mod_revision"], version=with_meta[0][1]["version"])
say("create new", created=c.create("new", "1"), again=c.create("new", "2"))
say("replace", swapped=c.replace("foo", "bar", "baz"), stale=c.replace("foo", "bar", "x"))
for k in ["fa", "fb"]:
    c.put(k, k.upper())
say("prefix", kvs=sorted((v.decode(), m["key"].decode()) for v, m in c.get_prefix("f")))
say("all", count=len(c.get_all()))
say("delete", deleted=c.delete("fa"), again=c.delete("fa"))
say("delete prefix", deleted=c.delete_prefix("f"))
say("missing", values=c.get("nothing"))

lease = c.lease(ttl=60)
c.put("leased", "v", lease=lease)
say("lease", ttl_ok=0 < lease.ttl() <= 60, keys=[k.decode() for k in lease.keys()])
say("lease refresh", ok=0 < lease.refresh() <= 60)
say("lease revoked", revoked=lease.revoke(), value=c.get("leased"))

events = []
done = threading.Event()


def on_event(event):
    events.append([event["kv"]["key"].decode(), event["kv"].get("value", b"").decode(),
                   event.get("type", "PUT")])
    if len(events) >= 2:
        done.set()


events_iter, cancel = c.watch("w")
watcher = threading.Thread(
    target=lambda: [on_event(e) for e in events_iter], daemon=True)
watcher.start()
import time  # noqa: E402 -- only the watch needs it

time.sleep(0.5)
c.put("w", "1")
c.delete("w")
done.wait(10)
cancel()
say("watch", events=events)

lock = c.lock(ttl=30)
say("lock", acquired=lock.acquire(), held=lock.is_acquired())
say("unlock", released=lock.release())
say("members", count=len(c.members()))
say("status", version_is_3=c.status()["version"].startswith("3."))
