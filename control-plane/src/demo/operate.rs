//! What the demo prints for operating its sidecars: `/explain` URLs (where
//! a call would go and why, with no request sent; the last one is a call
//! the policy denies) and the `remora-proxy tap` command.

use super::{spiffe, Ports};

pub(super) fn print_explain_and_tap(workloads: &[Ports]) {
    let [client, web, api] = workloads else {
        return;
    };
    let explain = |p: &Ports, listener: &str, host: &str, caller: Option<&str>| {
        let who = caller.map_or(String::new(), |c| format!("&client_id={}", spiffe(c)));
        format!(
            "curl 'http://{}/explain?listener={listener}&host={host}&path=/{who}&format=text'",
            p.admin
        )
    };
    println!("  explain: {}", explain(client, "outbound", "web", None));
    println!(
        "           {}",
        explain(web, "inbound", "web", Some("client"))
    );
    println!(
        "           {}   (denied: api admits web only)",
        explain(api, "inbound", "api", Some("client"))
    );
    println!(
        "  tap:     remora-proxy tap --admin {} --limit 20   (requests web's sidecar takes in)",
        web.admin
    );
}
