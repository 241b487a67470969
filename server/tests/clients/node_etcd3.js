// The same calls through the Node `etcd3` package against one endpoint,
// printed as JSON lines with what any etcd would answer (no member,
// cluster or lease ids, which differ between servers). Run by
// server/tests/clients.rs against Cairn and against etcd; both
// transcripts must be equal.
'use strict';
const { Etcd3 } = require('etcd3');

function say(step, what) {
  const out = Object.assign({ step }, what);
  const sorted = Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
  console.log(JSON.stringify(sorted));
}

async function main() {
  const c = new Etcd3({ hosts: `http://${process.argv[2]}` });
  try {
    await c.put('foo').value('bar');
    const got = await c.get('foo').exec();
    const kv = got.kvs[0];
    say('get', { value: kv.value.toString(), create: kv.create_revision, mod: kv.mod_revision, version: kv.version });
    const prev = await c.put('foo').value('bar2').getPrevious();
    say('put prev_kv', { prev: prev.value.toString() });
    for (const k of ['fa', 'fb', 'g']) await c.put(k).value(k.toUpperCase());
    say('prefix', { kvs: await c.getAll().prefix('f').sort('Key', 'Ascend').strings() });
    say('keys', { keys: await c.getAll().prefix('f').sort('Key', 'Descend').keys() });
    say('count', { count: await c.getAll().prefix('f').count() });
    say('missing', { value: await c.get('nothing').string() });
    const del = await c.delete().key('fa').getPrevious();
    say('delete', { prev: del.map((k) => k.value.toString()) });
    say('delete prefix', { deleted: (await c.delete().prefix('f')).deleted });

    const created = await c.if('t', 'Version', '==', 0).then(c.put('t').value('created')).commit();
    say('txn create', { succeeded: created.succeeded, revision: created.header.revision });
    const again = await c.if('t', 'Version', '==', 0).then(c.put('t').value('x')).else(c.get('t')).commit();
    say('txn else', { succeeded: again.succeeded, got: again.responses[0].response_range.kvs[0].value.toString() });

    const lease = c.lease(60, { autoKeepAlive: false });
    await lease.put('leased').value('v');
    const ttl = await c.leaseClient.leaseTimeToLive({ ID: await lease.grant(), keys: true });
    say('lease', { granted: ttl.grantedTTL, keys: ttl.keys.map((k) => k.toString()) });
    await lease.revoke();
    say('lease revoked', { value: await c.get('leased').string() });

    const seen = [];
    const w = await c.watch().key('w').create();
    const done = new Promise((resolve) => {
      w.on('put', (e) => { seen.push(['put', e.key.toString(), e.value.toString(), e.mod_revision]); if (seen.length === 2) resolve(); });
      w.on('delete', (e) => { seen.push(['delete', e.key.toString(), e.mod_revision]); if (seen.length === 2) resolve(); });
    });
    await c.put('w').value('1');
    await c.delete().key('w');
    await Promise.race([done, new Promise((r) => setTimeout(r, 10000))]);
    await w.cancel();
    say('watch', { events: seen });

    const lock = c.lock('the-lock');
    await lock.acquire();
    say('lock', { held: true });
    await lock.release();

    const members = await c.cluster.memberList({});
    say('members', { count: members.members.length });
    const t = await c.get('t').exec();
    const rev = Number(t.kvs[0].mod_revision);
    await c.put('t').value('again');
    await c.kv.compact({ revision: rev, physical: true });
    try {
      await c.get('t').revision(rev - 1).string();
      say('compacted read', { error: null });
    } catch (e) {
      say('compacted read', { error: e.constructor.name, message: e.message });
    }
  } finally {
    c.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
