//! What one watcher selects, and how its events go on the wire.

use bytes::Bytes;
use cairn_kv as kv;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_proto::mvccpb;

use crate::convert;

/// A watcher's key range, filters and options.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    key: Bytes,
    /// Empty: the single key; `None`: every key from `key` on.
    range_end: Option<Bytes>,
    no_put: bool,
    no_delete: bool,
    pub(crate) prev_kv: bool,
    pub(crate) fragment: bool,
}

impl Filter {
    /// The filter of a create request, with etcd's meanings: an empty key
    /// is `"\0"`, a `range_end` of `"\0"` means every key from `key` on.
    pub(crate) fn of(c: &WatchCreateRequest) -> Self {
        let key = if c.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            c.key.clone()
        };
        let range_end = match c.range_end.as_ref() {
            [] => Some(Bytes::new()),
            [0] => None,
            _ => Some(c.range_end.clone()),
        };
        Self {
            key,
            range_end,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
        }
    }

    pub(crate) fn matches(&self, e: &kv::Event) -> bool {
        let k = &e.kv.key;
        let in_range = match &self.range_end {
            None => k >= &self.key,
            Some(end) if end.is_empty() => k == &self.key,
            Some(end) => k >= &self.key && k < end,
        };
        in_range
            && !(self.no_put && e.kind == kv::EventKind::Put)
            && !(self.no_delete && e.kind == kv::EventKind::Delete)
    }

    /// True when this watcher would send an event whose `prev_kv` has not
    /// been read yet.
    pub(crate) fn needs_prev_kv(&self, events: &[kv::Event]) -> bool {
        self.prev_kv && events.iter().any(|e| e.needs_prev_kv() && self.matches(e))
    }

    /// The events of `events` this watcher selects, as sent.
    pub(crate) fn select(&self, events: &[kv::Event]) -> Vec<mvccpb::Event> {
        events
            .iter()
            .filter(|e| self.matches(e))
            .map(|e| self.to_pb(e))
            .collect()
    }

    fn to_pb(&self, e: &kv::Event) -> mvccpb::Event {
        mvccpb::Event {
            r#type: match e.kind {
                kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
                kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
            },
            kv: Some(convert::key_value(e.kv.clone())),
            prev_kv: if self.prev_kv {
                e.prev_kv.as_deref().cloned().map(convert::key_value)
            } else {
                None
            },
        }
    }
}
