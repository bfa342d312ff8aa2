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
    match (status, token) {
        (200, _) => serde_json::from_str(&body).map_err(|e| format!("{path}: bad JSON: {e}")),
        (401, None) => Err(format!(
            "the control plane wants a token and none was found in {}; pass --token, set ODIGOS_TOKEN, or --state-dir to where `odigos up` keeps its state",
            args.state_dir.join("token").display()
        )),
        (401, Some(_)) => Err(format!(
            "{path}: the token was refused; pass the control plane's token with --token or ODIGOS_TOKEN"
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
            Some(What::Destination { name }) => destination(&state, &agents, name),
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

/// `ready (Reason: message)` or `not ready (...)`: whether its config is in force.
fn condition(value: &Value) -> String {
    let c = &value["condition"];
    let ready = if c["status"] == "True" {
        "ready"
    } else {
        "not ready"
    };
    format!("{ready} ({}: {})", text(&c["reason"]), text(&c["message"]))
}

/// `delivering`, `DEGRADED since T: error` or `unknown (...)`: whether data reaches it.
fn health(value: &Value) -> Option<String> {
    let h = value.get("health").filter(|h| !h.is_null())?;
    let since = h["since"]
        .as_str()
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    Some(match h["status"].as_str() {
        Some("True") if h["reason"] == "Idle" => "nothing sent to it yet".to_string(),
        Some("True") => format!("delivering{since}"),
        Some("False") => format!("DEGRADED{since}: {}", text(&h["message"])),
        _ => format!("unknown ({})", text(&h["message"])),
    })
}

/// `a, b, c` from a JSON array of strings.
fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The widest of `names`, for a column that fits them all.
fn width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(|n| n.chars().count()).max().unwrap_or(0)
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
    let list: Vec<String> = state["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| about.is_none_or(|name| problem_line(p).contains(name)))
        .map(|p| {
            let in_force = match p["resource"].as_str() {
                Some(resource) => match state["accepted"][resource].as_str() {
                    Some(at) => format!("the version accepted at {at} stays in force"),
                    None => "no version of it is in force".to_string(),
                },
                None => "what the file held before stays in force".to_string(),
            };
            format!("{}\n    ({in_force})", problem_line(p))
        })
        .collect();
    if !list.is_empty() {
        out.push_str("problems:\n");
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
    let destinations = state["destinations"].as_object();
    let names = width(destinations.into_iter().flatten().map(|(n, _)| n.as_str()));
    let types = width(
        destinations
            .into_iter()
            .flatten()
            .filter_map(|(_, d)| d["type"].as_str()),
    );
    let signals = width(
        destinations
            .into_iter()
            .flatten()
            .map(|(_, d)| list(&d["signals"]))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    out.push_str("destinations:\n");
    for (name, d) in destinations.into_iter().flatten() {
        out.push_str(&format!(
            "  {name:<names$}  {:<types$}  {:<signals$}  {}{}\n",
            text(&d["type"]),
            list(&d["signals"]),
            condition(d),
            health(d).map(|h| format!(", {h}")).unwrap_or_default()
        ));
    }
    let sources = state["sources"].as_array().cloned().unwrap_or_default();
    if !sources.is_empty() {
        out.push_str("sources:\n");
        let names = width(sources.iter().filter_map(|s| s["name"].as_str()));
        let workloads = width(sources.iter().filter_map(|s| s["workload"].as_str()));
        for s in &sources {
            out.push_str(&format!(
                "  {:<names$}  {:<workloads$}  {}\n",
                text(&s["name"]),
                text(&s["workload"]),
                condition(s)
            ));
        }
    }
    let resources = state["resources"].as_array().cloned().unwrap_or_default();
    if !resources.is_empty() {
        out.push_str("actions, rules and sampling:\n");
    }
    let labels: Vec<String> = resources
        .iter()
        .map(|r| format!("{} {}", text(&r["kind"]), text(&r["name"])))
        .collect();
    let labels_width = width(labels.iter().map(String::as_str));
    for (label, r) in labels.iter().zip(&resources) {
        out.push_str(&format!("  {label:<labels_width$}  {}\n", condition(r)));
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
    // Config on one axis, data on the other: which components fail, if any.
    let health = match (a["healthy"].as_bool(), a["last_error"].as_str()) {
        (Some(false), Some(failing)) => format!("DEGRADED: {failing} failing"),
        (Some(false), None) => "DEGRADED".to_string(),
        (Some(true), _) => "healthy".to_string(),
        (None, _) => "health unknown".to_string(),
    };
    format!(
        "{} {role:<8} {:<10} config {} {}{}  {health}",
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

fn destination(state: &Value, agents: &Value, name: &str) -> Result<String, String> {
    let d = find(&state["destinations"], name, "destination")?;
    let full = text(&d["name"]);
    // The first line says whether data gets there, and if not, why. A destination whose last
    // edit is refused still runs its version accepted earlier.
    let verdict = if d["plan"]["status"] == "active" {
        let health = health(d).unwrap_or_else(|| "in use".to_string());
        match d["condition"]["status"].as_str() {
            Some("True") => health,
            _ => format!("{health}; its last edit is refused (see config)"),
        }
    } else {
        format!(
            "NOT IN USE ({}: {})",
            text(&d["condition"]["reason"]),
            text(&d["condition"]["message"])
        )
    };
    let mut out = format!(
        "destination {full}: {verdict}\n  type     {}\n  signals  {}\n  config   {}\n",
        text(&d["type"]),
        list(&d["signals"]),
        condition(d)
    );
    let plan = &d["plan"];
    if plan["status"] == "active" {
        let exporters: Vec<String> = plan["exporters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        out.push_str(&format!(
            "  exporter {}\n  pipelines {}\n",
            exporters.join(", "),
            list(&plan["pipelines"])
        ));
        for a in agents.as_array().into_iter().flatten() {
            for exporter in &exporters {
                let Some(c) = a["components"].get(format!("exporters.{exporter}")) else {
                    continue;
                };
                let error = c["last_error"].as_str().filter(|e| !e.is_empty());
                let which = match exporters.len() {
                    1 => String::new(),
                    _ => format!(" {exporter}"),
                };
                out.push_str(&format!(
                    "  gateway {}{which}: {}{}\n",
                    short(&a["uid"]),
                    text(&c["status"]),
                    error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ));
            }
        }
        out.push_str(&format!(
            "  gateway config {} (desired)\n",
            short(&state["hashes"]["gateway"])
        ));
        if let Some(address) = state["metrics"]["gateway"].as_str() {
            match get(address, "/metrics", None) {
                Ok((200, metrics)) => {
                    // The exporter's counts that are not zero.
                    let needles: Vec<String> = exporters
                        .iter()
                        .map(|e| format!("exporter=\"{e}\""))
                        .collect();
                    let lines: Vec<&str> = metrics
                        .lines()
                        .filter(|l| !l.starts_with('#') && needles.iter().any(|n| l.contains(n)))
                        .filter(|l| !l.ends_with(" 0"))
                        .collect();
                    if lines.is_empty() {
                        out.push_str(
                            "  the gateway's counts for it are all zero: nothing sent yet\n",
                        );
                    } else {
                        out.push_str("  the gateway's counts for it:\n");
                    }
                    for line in lines {
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
    let mut out = format!(
        "source {full}\n  workload {}\n  status   {}\n",
        text(&s["workload"]),
        condition(s)
    );
    let processes = s["processes"].as_array().cloned().unwrap_or_default();
    if !processes.is_empty() {
        out.push_str(
            "  processes (odiglet)
",
        );
        for p in &processes {
            out.push_str(&format!(
                "    {}  {}
",
                text(&p["pid"]),
                text(&p["status"])
            ));
        }
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
    // A uid as printed, or written as a UUID, or any unique prefix of it.
    let wanted = uid.replace('-', "").to_ascii_lowercase();
    let known = || {
        all.iter()
            .map(|a| text(&a["uid"]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hits: Vec<&Value> = all
        .iter()
        .filter(|a| a["uid"].as_str().is_some_and(|u| u.starts_with(&wanted)))
        .collect();
    let a = match hits.as_slice() {
        [one] => *one,
        [] => return Err(format!("no agent {uid:?}; known: {}", known())),
        many => {
            let uids: Vec<String> = many.iter().map(|a| text(&a["uid"])).collect();
            return Err(format!(
                "{uid:?} matches {} agents: {}; give more of the uid",
                many.len(),
                uids.join(", ")
            ));
        }
    };
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
    for (component, c) in a["components"].as_object().into_iter().flatten() {
        let since = c["since"]
            .as_str()
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        if c["healthy"] == true {
            out.push_str(&format!("  {component}: {}\n", text(&c["status"])));
        } else {
            out.push_str(&format!(
                "  FAILING {component}{since}: {}; {}\n",
                text(&c["last_error"]),
                text(&c["status"])
            ));
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
