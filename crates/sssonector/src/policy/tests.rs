use std::path::Path;

use sssonector_certs::{CertificateAuthority, ClientNames, Identity, PeerIdentity, Validity};
use sssonector_ratelimit::Pacing;
use sssonector_tunnel::tun::Destination;

use super::*;

fn peer(cn: &str, ou: Option<&str>, dns: &[&str], uris: &[&str]) -> PeerIdentity {
    let ca = CertificateAuthority::generate("test CA", Validity::days(1)).unwrap();
    let mut names = ClientNames::default();
    names.organizational_unit = ou.map(str::to_owned);
    names.dns_names = dns.iter().map(|d| (*d).to_owned()).collect();
    names.uris = uris.iter().map(|u| (*u).to_owned()).collect();
    let issued = ca.issue_client_with(cn, &names, Validity::days(1)).unwrap();
    let chain = Identity::from_pem(&issued.cert_pem, &issued.key_pem)
        .unwrap()
        .chain()
        .to_vec();
    PeerIdentity::from_der(&chain[0]).unwrap()
}

const FORWARDS: &[&str] = &["db", "web", "metrics-a", "metrics-b"];

fn forward_policy(text: &str) -> Result<Policy, Vec<String>> {
    let section: PolicySection = toml::from_str(text).unwrap();
    let forwards: Vec<String> = FORWARDS.iter().map(|f| (*f).to_owned()).collect();
    section.build(Context {
        forwards: Some(&forwards),
        base: Path::new("."),
    })
}

fn tun_policy(text: &str) -> Policy {
    let section: PolicySection = toml::from_str(text).unwrap();
    section
        .build(Context {
            forwards: None,
            base: Path::new("."),
        })
        .unwrap()
}

#[test]
fn each_matcher_matches_its_own_field() {
    let alice = peer(
        "alice",
        Some("ops"),
        &["alice.corp.example"],
        &["spiffe://example.org/ns/prod/sa/alice"],
    );
    let cases = [
        (r#"cn = "alice""#, true),
        (r#"cn = "bob""#, false),
        (r#"cn = ["bob", "ali*"]"#, true),
        (r#"ou = "ops""#, true),
        (r#"ou = "dev""#, false),
        (r#"dns = "*.CORP.example""#, true),
        (r#"dns = "*.other.example""#, false),
        (r#"uri = "spiffe://example.org/ns/prod/*""#, true),
        (r#"uri = "spiffe://example.org/ns/dev/*""#, false),
        (
            &format!(r#"sha256 = "{}""#, alice.sha256.to_uppercase()),
            true,
        ),
        (&format!(r#"sha256 = "{}""#, "0".repeat(64)), false),
        // Every field given must match.
        (r#"cn = "alice", ou = "dev""#, false),
        (r#"cn = "alice", ou = "ops", dns = "alice.*""#, true),
    ];
    for (matcher, expected) in cases {
        let policy = forward_policy(&format!(
            "[[rule]]\nname = \"r\"\nmatch = {{ {matcher} }}\nforwards = [\"db\"]\n"
        ))
        .unwrap();
        assert_eq!(
            policy.evaluate(&alice).is_some(),
            expected,
            "match = {{ {matcher} }}"
        );
    }
}

#[test]
fn default_deny_and_first_match_wins() {
    let policy = forward_policy(
        r#"
        [[rule]]
        name = "ops"
        match = { ou = "ops" }
        forwards = ["db", "metrics-*"]

        [[rule]]
        name = "everyone"
        match = { cn = "*" }
        forwards = ["web"]
        "#,
    )
    .unwrap();
    let alice = peer("alice", Some("ops"), &[], &[]);
    let bob = peer("bob", None, &[], &[]);
    let access = Access::Policy(Arc::new(policy));
    let a = access.verdict(&alice);
    assert_eq!(a.rule(), "ops");
    assert!(a.allows_forward("db") && a.allows_forward("metrics-b"));
    // The first matching rule decides: the second rule's grant is not added.
    assert!(!a.allows_forward("web"));
    let b = access.verdict(&bob);
    assert_eq!(b.rule(), "everyone");
    assert!(b.allows_forward("web") && !b.allows_forward("db"));

    let strict = forward_policy("[[rule]]\nname = \"ops\"\nmatch = { ou = \"ops\" }\n").unwrap();
    let strict = Access::Policy(Arc::new(strict));
    assert_eq!(strict.verdict(&bob), Verdict::Refused);
    // A rule that grants nothing permits nothing but the session itself.
    assert!(!strict.verdict(&alice).allows_forward("db"));
    // Without a policy, everything is allowed.
    assert!(Access::Open.verdict(&bob).allows_forward("db"));
}

#[test]
fn networks_and_client_to_client() {
    let policy = tun_policy(
        r#"
        [[rule]]
        name = "lan"
        match = { cn = "alice" }
        networks = ["192.168.10.0/24", "10.8.0.1/32"]

        [[rule]]
        name = "peers"
        match = { cn = "bob" }
        networks = ["10.8.0.0/24"]
        client_to_client = true
        "#,
    );
    let access = Access::Policy(Arc::new(policy));
    let alice = access.verdict(&peer("alice", None, &[], &[]));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(alice.allows_packet(ip("192.168.10.7"), Destination::Server));
    assert!(alice.allows_packet(ip("10.8.0.1"), Destination::Server));
    assert!(!alice.allows_packet(ip("192.168.11.7"), Destination::Server));
    // Another client is never reached without client_to_client, whatever the networks say.
    assert!(!alice.allows_packet(ip("10.8.0.3"), Destination::Client));
    let bob = access.verdict(&peer("bob", None, &[], &[]));
    assert!(bob.allows_packet(ip("10.8.0.3"), Destination::Client));
    assert!(!bob.allows_packet(ip("192.168.10.7"), Destination::Server));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let errors = forward_policy(
        r#"
        [[rule]]
        name = "a"
        match = {}
        forwards = ["nope"]
        networks = ["10.0.0/8"]
        tier = "gold"
        max_sessions = 0

        [[rule]]
        name = "a"
        match = { sha256 = "abc", cn = "" }

        [tiers.silver]
        upload_mbps = -1
        "#,
    )
    .unwrap_err();
    let expected = [
        "policy.tiers.silver.upload_mbps: must be a positive number of Mbit/s",
        "policy.rule[0].match: give at least one of cn, ou, dns, uri, sha256",
        "policy.rule[0].forwards[0]: \"nope\" names no [[forward]] rule (known: db, web, metrics-a, metrics-b)",
        "policy.rule[0].networks[0]: the server is in forward mode; grant forwards instead",
        "policy.rule[0].networks[0]: \"10.0.0/8\": \"10.0.0\" is not an IP address",
        "policy.rule[0].tier: no tier named \"gold\" in [policy.tiers]",
        "policy.rule[0].max_sessions: must be at least 1",
        "policy.rule[1].name: \"a\" is used twice",
        "policy.rule[1].match.sha256[0]: \"abc\" is not a SHA-256 fingerprint (64 hex digits)",
        "policy.rule[1].match.cn[0]: must not be empty",
    ];
    for e in expected {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn session_limits_count_per_identity() {
    let policy = forward_policy(
        "[[rule]]\nname = \"one\"\nmatch = { cn = \"*\" }\nforwards = [\"*\"]\nmax_sessions = 1\n",
    )
    .unwrap();
    let guard = Guard::new(Access::Policy(Arc::new(policy)));
    let alice = peer("alice", None, &[], &[]);
    let bob = peer("bob", None, &[], &[]);
    let first = guard.admit(&alice).unwrap();
    assert_eq!(guard.admit(&alice).err(), Some(Denied::SessionLimit(1)));
    // Another identity has its own count.
    let _bob = guard.admit(&bob).unwrap();
    drop(first);
    assert!(guard.admit(&alice).is_ok());
}

#[test]
fn a_replaced_policy_reaches_watchers() {
    let guard = Guard::new(Access::Open);
    let mut watcher = guard.subscribe();
    let alice = peer("alice", None, &[], &[]);
    assert_eq!(watcher.borrow_and_update().verdict(&alice), Verdict::All);
    let policy = forward_policy("[[rule]]\nname = \"x\"\nmatch = { cn = \"bob\" }\n").unwrap();
    guard.replace(Access::Policy(Arc::new(policy)));
    assert!(watcher.has_changed().unwrap());
    assert_eq!(
        watcher.borrow_and_update().verdict(&alice),
        Verdict::Refused
    );
    assert_eq!(guard.admit(&alice).err(), Some(Denied::NoRule));
}

#[test]
fn the_version_follows_the_text() {
    let a = forward_policy("[[rule]]\nname = \"x\"\nmatch = { cn = \"a\" }\n").unwrap();
    let b = forward_policy("[[rule]]\nname = \"x\"\nmatch = { cn = \"a\" }\n").unwrap();
    let c = forward_policy("[[rule]]\nname = \"x\"\nmatch = { cn = \"b\" }\n").unwrap();
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
    assert_eq!(a.version.len(), 12);
}

fn granted(policy: &Policy, who: &PeerIdentity) -> Verdict {
    Access::Policy(Arc::new(policy.clone())).verdict(who)
}

#[test]
fn a_lowered_session_limit_ends_the_newest_sessions() {
    let four = forward_policy(
        "[[rule]]\nname = \"one\"\nmatch = { cn = \"*\" }\nforwards = [\"*\"]\nmax_sessions = 4\n",
    )
    .unwrap();
    let two = forward_policy(
        "[[rule]]\nname = \"one\"\nmatch = { cn = \"*\" }\nforwards = [\"*\"]\nmax_sessions = 2\n",
    )
    .unwrap();
    let guard = Guard::new(Access::Policy(Arc::new(four)));
    let alice = peer("alice", None, &[], &[]);
    let bob = peer("bob", None, &[], &[]);
    let sessions: Vec<_> = (0..3).map(|_| guard.admit(&alice).unwrap()).collect();
    let bobs = guard.admit(&bob).unwrap();
    guard.replace(Access::Policy(Arc::new(two.clone())));
    let now = granted(&two, &alice);
    let outcomes: Vec<Reapplied> = sessions
        .iter()
        .map(|s| guard.reapply(&s.slot.id(), &now))
        .collect();
    assert_eq!(
        outcomes,
        [Reapplied::Keep, Reapplied::Keep, Reapplied::OverLimit(2)],
        "the oldest two stay"
    );
    assert_eq!(
        guard.reapply(&bobs.slot.id(), &granted(&two, &bob)),
        Reapplied::Keep
    );
    // Once the newest has gone, the limit holds for new ones.
    let mut sessions = sessions;
    drop(sessions.pop());
    assert_eq!(guard.admit(&alice).err(), Some(Denied::SessionLimit(2)));
}

#[test]
fn a_tiers_new_rates_apply_in_place_and_a_new_tier_needs_a_reconnect() {
    let rule = "[[rule]]\nname = \"one\"\nmatch = { cn = \"*\" }\nforwards = [\"*\"]\n";
    let tiered = |up: u32, down: u32| {
        forward_policy(&format!(
            "{rule}tier = \"gold\"\n[tiers.gold]\nupload_mbps = {up}\ndownload_mbps = {down}\n"
        ))
        .unwrap()
    };
    let guard = Guard::new(Access::Policy(Arc::new(tiered(8, 16))));
    let alice = peer("alice", None, &[], &[]);
    let first = guard.admit(&alice).unwrap();
    let second = guard.admit(&alice).unwrap();
    let (upload, download) = first.budgets.clone().unwrap();
    let rate = |pacing: &Option<Pacing>| {
        let quota = pacing.as_ref().unwrap().budgets()[0].quotas()[0];
        quota.count() * 8 / quota.period().as_secs()
    };
    assert_eq!((rate(&upload), rate(&download)), (8_000_000, 16_000_000));

    // New rates: changed once, in the budgets both sessions share.
    let faster = tiered(40, 80);
    let now = granted(&faster, &alice);
    assert!(matches!(
        guard.reapply(&first.slot.id(), &now),
        Reapplied::Rerated(tier) if tier.upload_mbps == Some(40.0)
    ));
    assert_eq!(guard.reapply(&second.slot.id(), &now), Reapplied::Keep);
    assert_eq!((rate(&upload), rate(&download)), (40_000_000, 80_000_000));
    let (shared, _) = second.budgets.clone().unwrap();
    assert_eq!(rate(&shared), 40_000_000);

    // No tier any more, or a session that had none and now has one: pacing cannot follow.
    let untiered = forward_policy(rule).unwrap();
    assert_eq!(
        guard.reapply(&first.slot.id(), &granted(&untiered, &alice)),
        Reapplied::Reconnect
    );
    let open = Guard::new(Access::Policy(Arc::new(untiered)));
    let plain = open.admit(&alice).unwrap();
    assert_eq!(
        open.reapply(&plain.slot.id(), &granted(&faster, &alice)),
        Reapplied::Reconnect
    );
}
