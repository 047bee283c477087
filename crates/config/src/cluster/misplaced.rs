//! Keys that belong in `node.toml`, and the explanation given when one turns up in `cluster.toml`.

/// The non-replicated settings of the guide (section 14.1.1): `node.toml` section name and the
/// WebUI page it stands for.
pub const LOCAL_SECTIONS: &[(&str, &str)] = &[
    ("hostname_dns", "Hostname & DNS"),
    ("network", "Network Interface Configuration"),
    ("routing", "Routing"),
    ("date_time", "System Date & time"),
    ("physical_advanced", "Physical - Advanced Configuration"),
    ("portal_management", "Portal Management"),
    ("security", "Security"),
    ("snmp", "SNMP Configuration"),
    ("graphing", "Graphing"),
    ("license_key", "License Key"),
    ("backup_restore", "Backup & Restore"),
    ("software_updates", "Software Updates"),
    ("firewall_script", "Firewall Script"),
    ("firewall_lockdown", "Firewall Lockdown Wizard"),
];

/// Other names an operator may use for a non-replicated setting.
const LOCAL_ALIASES: &[(&str, &str)] = &[
    ("hostname", "hostname_dns"),
    ("dns", "hostname_dns"),
    ("interfaces", "network"),
    ("bonding", "network"),
    ("vlans", "network"),
    ("vlan", "network"),
    ("routes", "routing"),
    ("gateway", "routing"),
    ("ntp", "date_time"),
    ("time", "date_time"),
    ("timezone", "date_time"),
    ("physical", "physical_advanced"),
    ("portal", "portal_management"),
    ("license", "license_key"),
    ("backup", "backup_restore"),
    ("updates", "software_updates"),
    ("firewall", "firewall_script"),
    ("lockdown", "firewall_lockdown"),
];

/// Keys of `node.toml` that must never appear in the replicated file.
const NODE_KEYS: &[&str] = &[
    "node",
    "admin",
    "role",
    "peer",
    "interface",
    "address",
    "heartbeat_port",
    "sync_port",
    "manage_vips",
    "secret_file",
    "state_dir",
    "listen",
    "user",
    "password_file",
];

/// Explains a key of `cluster.toml` that belongs in `node.toml`, if it is one.
pub(super) fn misplaced_in_cluster(key: &str) -> Option<String> {
    let k = key.to_ascii_lowercase().replace('-', "_");
    if let Some((name, page)) = LOCAL_SECTIONS.iter().find(|(n, _)| *n == k) {
        return Some(format!(
            "`{name}` belongs in node.toml: {page} is a non-replicated setting, kept on each node"
        ));
    }
    if let Some((_, section)) = LOCAL_ALIASES.iter().find(|(a, _)| *a == k) {
        return Some(format!(
            "`{key}` belongs in node.toml (section [{section}]): it is a non-replicated setting, kept on each node"
        ));
    }
    if k.contains("secret") || k.contains("password") {
        return Some(format!(
            "`{key}` belongs in node.toml: cluster.toml is replicated and carries no secrets"
        ));
    }
    if k == "tuning" || crate::tuning::TUNING_KEYS.contains(&k.as_str()) {
        return Some(format!(
            "`{key}` belongs in node.toml [tuning]: it tunes one node and is never replicated"
        ));
    }
    if NODE_KEYS.contains(&k.as_str()) {
        return Some(format!(
            "`{key}` belongs in node.toml: it is node-specific and never replicated"
        ));
    }
    None
}

pub(super) fn misplaced_in_section(key: &str) -> Option<String> {
    let k = key.to_ascii_lowercase();
    if k.contains("secret") || k.contains("password") {
        return Some(format!(
            "`{key}` belongs in node.toml: cluster.toml is replicated and carries no secrets"
        ));
    }
    None
}

/// No explanation beyond "unknown key".
pub(super) fn no_hint(_: &str) -> Option<String> {
    None
}
