//! Interning of server labels: entries store a small id, so a million entries pointing at three
//! servers share three strings.

use std::collections::HashMap;

use crate::ServerLabel;

#[derive(Debug, Default)]
pub(crate) struct Labels {
    names: Vec<Option<ServerLabel>>,
    refs: Vec<u32>,
    by_name: HashMap<ServerLabel, u32>,
    free: Vec<u32>,
}

impl Labels {
    /// The id of `name`, counting one more reference to it.
    pub(crate) fn acquire(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            self.refs[id as usize] += 1;
            return id;
        }
        let label: ServerLabel = ServerLabel::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(label.clone());
                self.refs[id as usize] = 1;
                id
            }
            None => {
                // Label ids are u32 and there are never more labels than entries (itself usize);
                // a table of 4G distinct labels is not a configuration tandem accepts.
                let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX - 2);
                self.names.push(Some(label.clone()));
                self.refs.push(1);
                id
            }
        };
        self.by_name.insert(label, id);
        id
    }

    /// Drops one reference; the label is forgotten with its last entry.
    pub(crate) fn release(&mut self, id: u32) {
        let Some(refs) = self.refs.get_mut(id as usize) else {
            return;
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0
            && let Some(name) = self.names[id as usize].take()
        {
            self.by_name.remove(&name);
            self.free.push(id);
        }
    }

    pub(crate) fn name(&self, id: u32) -> Option<&ServerLabel> {
        self.names.get(id as usize).and_then(Option::as_ref)
    }

    /// Ids of every label in use for which `keep` is false.
    pub(crate) fn ids_not_kept(&self, keep: impl Fn(&str) -> bool) -> Vec<u32> {
        self.by_name
            .iter()
            .filter(|(name, _)| !keep(name))
            .map(|(_, &id)| id)
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_and_released() {
        let mut labels = Labels::default();
        let a = labels.acquire("a");
        let b = labels.acquire("b");
        assert_eq!(labels.acquire("a"), a);
        assert_ne!(a, b);
        assert_eq!(labels.name(a).map(|s| &**s), Some("a"));
        labels.release(a);
        assert_eq!(labels.len(), 2);
        labels.release(a);
        assert_eq!(labels.len(), 1);
        assert_eq!(labels.name(a), None);
        let c = labels.acquire("c");
        assert_eq!(c, a, "freed id is reused");
        assert_eq!(labels.ids_not_kept(|n| n == "b"), vec![c]);
    }
}
