//! The per-service collection of tables, keyed by service label, and its live reload.

use std::collections::HashMap;

use crate::{StickTable, TableSpec};

/// What [`StickTables::reconcile`] did, by service label (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub added: Vec<String>,
    /// Spec changed: resized and/or re-timed, entries kept.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
}

/// Every stick table of the node, one per service with table-backed persistence
/// (`source-ip`, `last-successful`), matched by service label (also across the peers).
#[derive(Debug, Default)]
pub struct StickTables {
    tables: HashMap<String, StickTable>,
}

impl StickTables {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, service: &str) -> Option<&StickTable> {
        self.tables.get(service)
    }

    pub fn get_mut(&mut self, service: &str) -> Option<&mut StickTable> {
        self.tables.get_mut(service)
    }

    /// Every table with its service label (arbitrary order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StickTable)> {
        self.tables
            .iter()
            .map(|(label, table)| (label.as_str(), table))
    }

    /// Every table with its service label, mutably (arbitrary order).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut StickTable)> {
        self.tables
            .iter_mut()
            .map(|(label, table)| (label.as_str(), table))
    }

    /// Number of tables.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Live reload: makes the set of tables match `specs` (service label -> spec, for the
    /// services that persist with a table). Tables whose spec is unchanged are left exactly as
    /// they are; changed ones are resized/re-timed keeping their entries
    /// ([`StickTable::set_spec`]); new services get an empty table; the rest are dropped.
    pub fn reconcile(
        &mut self,
        specs: impl IntoIterator<Item = (String, TableSpec)>,
        now: u64,
    ) -> ReconcileSummary {
        let mut summary = ReconcileSummary::default();
        let mut next = HashMap::new();
        for (label, spec) in specs {
            let table = match self.tables.remove(&label) {
                Some(mut table) => {
                    if table.spec() == StickTable::new(spec).spec() {
                        summary.unchanged.push(label.clone());
                    } else {
                        table.set_spec(spec, now);
                        summary.changed.push(label.clone());
                    }
                    table
                }
                None if next.contains_key(&label) => continue,
                None => {
                    summary.added.push(label.clone());
                    StickTable::new(spec)
                }
            };
            next.insert(label, table);
        }
        summary.removed = self.tables.drain().map(|(label, _)| label).collect();
        self.tables = next;
        for list in [
            &mut summary.added,
            &mut summary.changed,
            &mut summary.unchanged,
            &mut summary.removed,
        ] {
            list.sort();
        }
        summary
    }

    /// Drops the entries of `service` that point at a server not in `servers` (labels); returns
    /// how many. Not logged: the peer runs the same configuration and does the same.
    pub fn retain_servers(&mut self, service: &str, servers: &[impl AsRef<str>]) -> usize {
        match self.tables.get_mut(service) {
            Some(table) => {
                table.retain_servers(|label| servers.iter().any(|s| s.as_ref() == label))
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StickKey;

    fn spec(timeout_s: u64, size: usize) -> TableSpec {
        TableSpec::from_config(timeout_s, size)
    }

    #[test]
    fn reconcile_keeps_changes_and_drops() {
        let mut tables = StickTables::new();
        let first = tables.reconcile(
            [
                ("mysql".to_string(), spec(0, 1000)),
                ("nova".to_string(), spec(300, 10)),
                ("old".to_string(), spec(60, 10)),
            ],
            0,
        );
        assert_eq!(first.added, vec!["mysql", "nova", "old"]);
        let key = StickKey::SourceIp("10.1.1.1".parse().unwrap());
        tables
            .get_mut("mysql")
            .unwrap()
            .set(&StickKey::Service, "c1", 0);
        tables.get_mut("nova").unwrap().set(&key, "c2", 0);
        let mysql_id = tables.get("mysql").unwrap().last_update_id();

        let second = tables.reconcile(
            [
                ("mysql".to_string(), spec(0, 1000)),
                ("nova".to_string(), spec(600, 5)),
                ("glance".to_string(), spec(0, 10)),
            ],
            1000,
        );
        assert_eq!(second.unchanged, vec!["mysql"]);
        assert_eq!(second.changed, vec!["nova"]);
        assert_eq!(second.added, vec!["glance"]);
        assert_eq!(second.removed, vec!["old"]);
        assert_eq!(tables.len(), 3);
        assert!(tables.get("old").is_none());
        let mysql = tables.get("mysql").unwrap();
        assert_eq!(
            mysql.last_update_id(),
            mysql_id,
            "untouched table kept as is"
        );
        assert_eq!(
            mysql
                .peek(&StickKey::Service, 1000)
                .unwrap()
                .server
                .as_ref(),
            "c1"
        );
        let nova = tables.get("nova").unwrap();
        assert_eq!(nova.spec(), spec(600, 5));
        assert_eq!(nova.peek(&key, 1000).unwrap().server.as_ref(), "c2");
    }

    #[test]
    fn retain_servers_per_service() {
        let mut tables = StickTables::new();
        tables.reconcile([("mysql".to_string(), spec(0, 10))], 0);
        tables
            .get_mut("mysql")
            .unwrap()
            .set(&StickKey::Service, "c1", 0);
        assert_eq!(tables.retain_servers("mysql", &["c1", "c2"]), 0);
        assert_eq!(tables.retain_servers("mysql", &["c2"]), 1);
        assert!(tables.get("mysql").unwrap().is_empty());
        assert_eq!(tables.retain_servers("nope", &["c2"]), 0);
        assert_eq!(tables.iter().count(), 1);
    }
}
