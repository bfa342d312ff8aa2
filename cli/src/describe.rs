//! `odigos describe`: why data does or does not flow. Asks the control plane's API for the
//! desired state, how each resource stands and what each agent reports, and the collectors'
//! self-metrics for throughput.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,

    /// The control plane (`odigos up` or `odigos server`).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4320",
        global = true
    )]
    server: String,

    /// The API token [default: read from STATE_DIR/token].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ODIGOS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,

    /// The state directory of `odigos up`, where the token is kept.
    #[arg(long, value_name = "DIR", default_value = ".odigos", global = true)]
    state_dir: PathBuf,
}

#[derive(clap::Subcommand)]
enum What {
    /// A Source: its workload, service name and the instrumentation it gets.
    Source { name: String },
    /// A Destination: what it became, whether collectors run it, and what it has sent.
    Destination { name: String },
    /// An agent: its identity, config status (desired vs applied), health and errors.
    Agent { uid: String },
}

/// GET over HTTP/1.0 (the reply ends when the connection closes); returns status and body.
fn get(address: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot reach {address}: {e} (is `odigos up` running?)"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{auth}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn get_json(args: &Args, token: Option<&str>, path: &str) -> Result<Value, String> {
    let (status, body) = get(&args.server, path, token)?;
    match status {
        200 => serde_json::from_str(&body).map_err(|e| format!("{path}: bad JSON: {e}")),
        401 => Err(format!(
            "{path}: the token was refused; pass --token or --state-dir"
        )),
        _ => Err(format!("{path}: HTTP {status}: {}", body.trim())),
    }
}

pub fn main(args: Args) -> ExitCode {
    let token = args.token.clone().or_else(|| {
        std::fs::read_to_string(args.state_dir.join("token"))
            .ok()
            .map(|t| t.trim().to_string())
    });
    let result = get_json(&args, token.as_deref(), "/api/v1/state").and_then(|state| {
        let agents = get_json(&args, token.as_deref(), "/api/v1/agents")?;
        match &args.what {
            None => Ok(overview(&state, &agents)),
            Some(What::Destination { name }) => destination(&state, name),
            Some(What::Source { name }) => source(&state, name),
            Some(What::Agent { uid }) => agent(&state, &agents, uid),
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(hash: &Value) -> String {
    text(hash).chars().take(12).collect()
}

fn condition(value: &Value) -> String {
    let c = &value["condition"];
    let ready = if c["status"] == "True" {
        "ready"
    } else {
        "not ready"
    };
    format!("{ready} ({}: {})", text(&c["reason"]), text(&c["message"]))
}

/// An item of `map` (a JSON object) by `ns/name` or by name alone.
fn find<'a>(map: &'a Value, name: &str, what: &str) -> Result<&'a Value, String> {
    let items = map.as_object().ok_or("unexpected reply")?;
    let hit = items.get(name).or_else(|| {
        items
            .iter()
            .find(|(k, _)| k.rsplit('/').next() == Some(name))
            .map(|(_, v)| v)
    });
    hit.ok_or_else(|| {
        let known: Vec<&String> = items.keys().collect();
        format!(
            "no {what} {name:?}; known: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })
}

fn problems(state: &Value, out: &mut String, about: Option<&str>) {
    let list: Vec<&Value> = state["problems"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let list: Vec<String> = list
        .iter()
        .map(|p| problem_line(p))
        .filter(|line| about.is_none_or(|name| line.contains(name)))
        .collect();
    if !list.is_empty() {
        out.push_str("problems (the last good version stays in force):\n");
        for line in list {
            out.push_str(&format!("  {line}\n"));
        }
    }
}

fn problem_line(p: &Value) -> String {
    let mut line = text(&p["source"]);
    if let Some(n) = p["line"].as_u64() {
        line.push_str(&format!(":{n}"));
    }
    for key in ["resource", "field"] {
        if let Some(v) = p[key].as_str() {
            line.push_str(&format!(": {v}"));
        }
    }
    line.push_str(&format!(": {}", text(&p["message"])));
    line
}

fn overview(state: &Value, agents: &Value) -> String {
    let mut out = format!("desired state generation {}\n", text(&state["generation"]));
    problems(state, &mut out, None);
    out.push_str("collectors:\n");
    for (role, rollout) in state["rollouts"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "  {role:<8} config {}  applied by {} of {}{}\n",
            short(&rollout["desired"]),
            rollout["applied"],
            rollout["agents"],
            rollout["failed"]
                .as_array()
                .filter(|f| !f.is_empty())
                .map(|f| format!(
                    "  FAILED: {}",
                    f.iter().map(text).collect::<Vec<_>>().join("; ")
                ))
                .unwrap_or_default()
        ));
    }
    out.push_str("destinations:\n");
    for (name, d) in state["destinations"].as_object().into_iter().flatten() {
        let signals = d["signals"]
            .as_array()
            .map(|s| s.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {name:<24} {:<12} {signals:<20} {}\n",
            text(&d["type"]),
            condition(d)
        ));
    }
    let sources = state["sources"].as_array().cloned().unwrap_or_default();
    if !sources.is_empty() {
        out.push_str("sources:\n");
        for s in &sources {
            out.push_str(&format!(
                "  {:<24} {}{}\n",
                text(&s["name"]),
                text(&s["workload"]),
                if s["disabled"] == true {
                    " (disabled)"
                } else {
                    ""
                }
            ));
        }
    }
    let resources = state["resources"].as_array().cloned().unwrap_or_default();
    if !resources.is_empty() {
        out.push_str("actions, rules and sampling:\n");
    }
    for r in &resources {
        let name = format!("{} {}", text(&r["kind"]), text(&r["name"]));
        out.push_str(&format!("  {name:<37} {}\n", condition(r)));
    }
    out.push_str("agents:\n");
    for a in agents.as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", agent_line(a)));
    }
    out
}

fn agent_line(a: &Value) -> String {
    let role = a["non_identifying"]["odigos.role"]
        .as_str()
        .or(a["identifying"]["service.name"].as_str())
        .unwrap_or("?");
    let config = &a["config"];
    format!(
        "{} {role:<8} {:<10} config {} {}{}",
        text(&a["uid"]),
        a["connected"].as_str().unwrap_or("gone"),
        text(&config["status"]),
        short(&config["hash"]),
        config["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

fn destination(state: &Value, name: &str) -> Result<String, String> {
    let d = find(&state["destinations"], name, "destination")?;
    let full = text(&d["name"]);
    let mut out = format!(
        "destination {full}\n  type     {}\n  signals  {}\n  status   {}\n",
        text(&d["type"]),
        d["signals"],
        condition(d)
    );
    let plan = &d["plan"];
    if plan["status"] == "active" {
        let exporter = text(&plan["exporter"]);
        out.push_str(&format!(
            "  exporter {exporter}\n  pipelines {}\n",
            plan["pipelines"]
        ));
        out.push_str(&format!(
            "  gateway config {} (desired)\n",
            short(&state["hashes"]["gateway"])
        ));
        if let Some(address) = state["metrics"]["gateway"].as_str() {
            match get(address, "/metrics", None) {
                Ok((200, metrics)) => {
                    out.push_str("  sent by the gateway so far:\n");
                    let needle = format!("exporter=\"{exporter}\"");
                    let lines: Vec<&str> = metrics
                        .lines()
                        .filter(|l| !l.starts_with('#') && l.contains(&needle))
                        .collect();
                    if lines.is_empty() {
                        // Exporters that only print or write files keep no counts of their own.
                        out.push_str("    no exporter counts; received by the gateway:\n");
                    }
                    let received = metrics.lines().filter(|l| {
                        lines.is_empty() && l.starts_with("otelcol_receiver_accepted_")
                    });
                    for line in lines.iter().copied().chain(received) {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                Ok((status, _)) => out.push_str(&format!("  gateway metrics: HTTP {status}\n")),
                Err(e) => out.push_str(&format!("  gateway metrics: {e}\n")),
            }
        }
    }
    problems(state, &mut out, Some(&full));
    Ok(out)
}

fn source(state: &Value, name: &str) -> Result<String, String> {
    let sources: Value = Value::Object(
        state["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (text(&s["name"]), s.clone()))
            .collect(),
    );
    let s = find(&sources, name, "source")?;
    let full = text(&s["name"]);
    let mut out = format!("source {full}\n  workload {}\n", text(&s["workload"]));
    if s["disabled"] == true {
        out.push_str("  instrumentation is disabled (spec.disableInstrumentation)\n");
    }
    match s.get("instrumentation_config").filter(|c| !c.is_null()) {
        Some(config) => {
            out.push_str(&format!(
                "  service.name {}\n",
                text(&config["spec"]["serviceName"])
            ));
            out.push_str(&format!(
                "  InstrumentationConfig {}/{}\n",
                text(&config["metadata"]["namespace"]),
                text(&config["metadata"]["name"])
            ));
            let agent =
                serde_json::to_string_pretty(&config["spec"]["agentConfig"]).unwrap_or_default();
            for line in agent.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        None => {
            out.push_str("  no InstrumentationConfig (disabled, a namespace, or a name pattern)\n")
        }
    }
    problems(state, &mut out, Some(&full));
    Ok(out)
}

fn agent(state: &Value, agents: &Value, uid: &str) -> Result<String, String> {
    let all = agents.as_array().ok_or("unexpected reply")?;
    let a = all
        .iter()
        .find(|a| {
            a["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with(&uid.to_ascii_lowercase()))
        })
        .ok_or_else(|| {
            format!(
                "no agent {uid:?}; known: {}",
                all.iter()
                    .map(|a| text(&a["uid"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let mut out = format!("agent {}\n", agent_line(a));
    let role = a["non_identifying"]["odigos.role"].as_str().unwrap_or("");
    if let Some(desired) = state["hashes"].get(role) {
        let applied = &a["config"]["hash"];
        let same = applied == desired && a["config"]["status"] == "applied";
        out.push_str(&format!(
            "  desired config {}  reported {} {}  {}\n",
            short(desired),
            text(&a["config"]["status"]),
            short(applied),
            if same { "(in line)" } else { "(not yet)" }
        ));
    }
    out.push_str(&format!(
        "  healthy {}  {}\n",
        text(&a["healthy"]),
        a["last_error"].as_str().unwrap_or("")
    ));
    for (component, health) in a["components"].as_object().into_iter().flatten() {
        if health[0] != true {
            out.push_str(&format!("  failing {component}: {}\n", text(&health[1])));
        }
    }
    for (key, value) in a["identifying"]
        .as_object()
        .into_iter()
        .flatten()
        .chain(a["non_identifying"].as_object().into_iter().flatten())
    {
        out.push_str(&format!("  {key} = {}\n", text(value)));
    }
    for (file, body) in a["effective_config"].as_object().into_iter().flatten() {
        out.push_str(&format!("  effective config {file}:\n"));
        for line in text(body).lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    Ok(out)
}
