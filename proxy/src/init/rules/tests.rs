use super::*;

fn ports(list: &[&str]) -> Vec<PortRange> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

#[test]
fn default_install_script_on_an_empty_table() {
    let script = install_script(&Settings::default(), Family::V4, &Existing::default());
    assert_eq!(
        script,
        r#"*nat
:REMORA_PROXY_INBOUND - [0:0]
:REMORA_PROXY_OUTPUT - [0:0]
-A REMORA_PROXY_INBOUND -p tcp -m multiport --dports 4143,4191 -m comment --comment "remora: skip proxy inbound and admin ports" -j RETURN
-A REMORA_PROXY_INBOUND -p tcp -m comment --comment "remora: redirect inbound to the proxy" -j REDIRECT --to-ports 4143
-A REMORA_PROXY_OUTPUT -m owner --uid-owner 2102 -m comment --comment "remora: skip the proxy uid" -j RETURN
-A REMORA_PROXY_OUTPUT -o lo -m comment --comment "remora: skip loopback" -j RETURN
-A REMORA_PROXY_OUTPUT -p tcp -m comment --comment "remora: redirect outbound to the proxy" -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -m comment --comment "remora: intercept inbound TCP" -j REMORA_PROXY_INBOUND
-A OUTPUT -p tcp -m comment --comment "remora: intercept outbound TCP" -j REMORA_PROXY_OUTPUT
COMMIT
"#
    );
}

#[test]
fn skip_lists_ports_uid_and_cidrs_per_family() {
    let s = Settings {
        inbound_port: 5143,
        outbound_port: 5140,
        admin_port: 5191,
        proxy_uid: 1337,
        skip_inbound_ports: ports(&["22", "5191", "9000-9010"]),
        skip_outbound_ports: ports(&["3306", "3306", "6379"]),
        skip_outbound_cidrs: cidrs(&["169.254.169.254", "10.1.2.3/8", "fd00::1/8"]),
    };
    let v4 = install_script(&s, Family::V4, &Existing::default());
    for want in [
        "-A REMORA_PROXY_INBOUND -p tcp -m multiport --dports 5143,5191 ",
        // The admin port the user repeated is not listed twice.
        "-A REMORA_PROXY_INBOUND -p tcp -m multiport --dports 22,9000:9010 -m comment --comment \"remora: skip inbound ports\" -j RETURN",
        "-j REDIRECT --to-ports 5143",
        "-A REMORA_PROXY_OUTPUT -m owner --uid-owner 1337 ",
        "-A REMORA_PROXY_OUTPUT -p tcp -m multiport --dports 3306,6379 -m comment --comment \"remora: skip outbound ports\" -j RETURN",
        "-A REMORA_PROXY_OUTPUT -d 169.254.169.254/32 -m comment --comment \"remora: skip outbound CIDR\" -j RETURN",
        "-A REMORA_PROXY_OUTPUT -d 10.0.0.0/8 ",
        "-j REDIRECT --to-ports 5140",
    ] {
        assert!(v4.contains(want), "missing {want:?} in:\n{v4}");
    }
    assert!(
        !v4.contains("fd00"),
        "an IPv6 CIDR in the IPv4 script:\n{v4}"
    );

    let v6 = install_script(&s, Family::V6, &Existing::default());
    assert!(v6.contains("-A REMORA_PROXY_OUTPUT -d fd00::/8 -m comment"));
    assert!(!v6.contains("169.254") && !v6.contains("10.0.0.0"), "{v6}");
    // Everything but the CIDRs is the same in both families.
    let without_cidrs = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains(" -d "))
            .map(String::from)
            .collect()
    };
    assert_eq!(without_cidrs(&v4), without_cidrs(&v6));
}

#[test]
fn skip_order_is_uid_loopback_ports_cidrs_then_redirect() {
    let s = Settings {
        skip_outbound_ports: ports(&["25"]),
        skip_outbound_cidrs: cidrs(&["192.0.2.0/24"]),
        ..Settings::default()
    };
    let rules = output_rules(&s, Family::V4);
    let order = [
        "--uid-owner",
        "-o lo",
        "--dports 25",
        "-d 192.0.2.0/24",
        "REDIRECT",
    ];
    assert_eq!(rules.len(), order.len(), "{rules:#?}");
    for (rule, needle) in rules.iter().zip(order) {
        assert!(rule.contains(needle), "{needle:?} not in {rule}");
    }
}

#[test]
fn multiport_rules_hold_at_most_15_slots() {
    // 20 single ports and 5 ranges (2 slots each): 30 slots, 2 full rules.
    let mut list: Vec<String> = (1..=20).map(|p| (10_000 + p).to_string()).collect();
    list.extend((0..5).map(|i| format!("{0}-{1}", 20_000 + i * 10, 20_005 + i * 10)));
    let s = Settings {
        skip_outbound_ports: list.iter().map(|p| p.parse().unwrap()).collect(),
        ..Settings::default()
    };
    let rules: Vec<String> = output_rules(&s, Family::V4)
        .into_iter()
        .filter(|r| r.contains("multiport"))
        .collect();
    assert_eq!(rules.len(), 2, "{rules:#?}");
    let mut seen = 0;
    for r in &rules {
        let list = r
            .split("--dports ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let slots: usize = list
            .split(',')
            .map(|p| if p.contains(':') { 2 } else { 1 })
            .sum();
        assert!(slots <= 15, "{r}");
        seen += list.split(',').count();
    }
    assert_eq!(seen, 25);
}

#[test]
fn parses_ports_ranges_and_cidrs() {
    assert_eq!("80".parse::<PortRange>(), Ok(PortRange::single(80)));
    let range = PortRange {
        first: 8000,
        last: 8100,
    };
    assert_eq!(" 8000-8100 ".parse::<PortRange>(), Ok(range));
    assert_eq!("8000:8100".parse::<PortRange>(), Ok(range));
    assert_eq!(range.to_string(), "8000:8100");
    for bad in ["0", "65536", "http", "9-8", "1-", ""] {
        assert!(bad.parse::<PortRange>().is_err(), "{bad:?} parsed");
    }

    let c: Cidr = "10.9.8.7/16".parse().unwrap();
    assert_eq!(c.to_string(), "10.9.0.0/16");
    assert_eq!(c.family(), Family::V4);
    assert_eq!(
        "10.1.1.1".parse::<Cidr>().unwrap().to_string(),
        "10.1.1.1/32"
    );
    assert_eq!(
        "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
        "0.0.0.0/0"
    );
    assert_eq!(
        "fd00:1::5/64".parse::<Cidr>().unwrap().to_string(),
        "fd00:1::/64"
    );
    assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0/8",
        "example.com/8",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
    }
}

/// `iptables-save` after an install, with a foreign rule and another table.
const SAVED: &str = r#"# Generated by iptables-save v1.8.9 on Tue Jan  6 10:00:00 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j REMORA_PROXY_NOT_NAT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-HINT - [0:0]
:REMORA_PROXY_INBOUND - [0:0]
:REMORA_PROXY_OUTPUT - [0:0]
-A PREROUTING -p tcp -m comment --comment "remora: intercept inbound TCP" -j REMORA_PROXY_INBOUND
-A PREROUTING -p udp -j KUBE-HINT
-A OUTPUT -p tcp -m comment --comment "remora: intercept outbound TCP" -j REMORA_PROXY_OUTPUT
-A REMORA_PROXY_INBOUND -p tcp -m comment --comment "remora: redirect inbound to the proxy" -j REDIRECT --to-ports 4143
-A REMORA_PROXY_OUTPUT -p tcp -m comment --comment "remora: redirect outbound to the proxy" -j REDIRECT --to-ports 4140
COMMIT
# Completed on Tue Jan  6 10:00:00 2026
"#;

#[test]
fn reads_our_chains_and_jumps_from_the_nat_table_only() {
    let existing = Existing::parse(SAVED);
    assert_eq!(existing, Existing::installed());
    assert_eq!(
        Existing::parse("# Warning: iptables-legacy tables present\n"),
        Existing::default()
    );
    assert_eq!(our_lines(SAVED).len(), 7, "{:#?}", our_lines(SAVED));
    assert!(!our_lines(SAVED).iter().any(|l| l.contains("KUBE-HINT")));
}

#[test]
fn rerun_rewrites_our_chains_but_adds_no_second_jump() {
    let script = install_script(&Settings::default(), Family::V4, &Existing::parse(SAVED));
    assert!(script.contains(":REMORA_PROXY_INBOUND - [0:0]\n"));
    assert!(script.contains("-j REDIRECT --to-ports 4143\n"));
    assert!(!script.contains("-A PREROUTING"), "{script}");
    assert!(!script.contains("-A OUTPUT"), "{script}");

    // Only the missing jump is added.
    let half = Existing::parse(&SAVED.replace("-A OUTPUT -p tcp", "-A POSTROUTING -p tcp"));
    let script = install_script(&Settings::default(), Family::V4, &half);
    assert!(!script.contains("-A PREROUTING"), "{script}");
    assert!(script.contains("-A OUTPUT -p tcp -m comment --comment \"remora: intercept outbound TCP\" -j REMORA_PROXY_OUTPUT\n"));
}

#[test]
fn cleanup_deletes_jumps_then_empties_and_removes_chains() {
    assert_eq!(cleanup_script(&Existing::default()), None);
    let script = cleanup_script(&Existing::parse(SAVED)).unwrap();
    assert_eq!(
        script,
        r#"*nat
-D PREROUTING -p tcp -m comment --comment "remora: intercept inbound TCP" -j REMORA_PROXY_INBOUND
-D OUTPUT -p tcp -m comment --comment "remora: intercept outbound TCP" -j REMORA_PROXY_OUTPUT
-F REMORA_PROXY_INBOUND
-F REMORA_PROXY_OUTPUT
-X REMORA_PROXY_INBOUND
-X REMORA_PROXY_OUTPUT
COMMIT
"#
    );
    // Chains left by an older layout go too, and so does a stray duplicate jump.
    let odd = "*nat\n:REMORA_PROXY_OLD - [0:0]\n-A OUTPUT -j REMORA_PROXY_OLD\n-A OUTPUT -j REMORA_PROXY_OLD\nCOMMIT\n";
    let script = cleanup_script(&Existing::parse(odd)).unwrap();
    assert_eq!(script.matches("-D OUTPUT -j REMORA_PROXY_OLD\n").count(), 2);
    assert!(script.contains("-X REMORA_PROXY_OLD\n"));
}
