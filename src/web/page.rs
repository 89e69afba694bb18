//! The status page (`/`) and a page per request (`/jobs/{id}`): plain
//! server-rendered HTML that refreshes itself, readable without JavaScript, on
//! a phone and in dark mode. Everything shown is escaped; logs go through the
//! same secret masking as comments.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::domain::{Conclusion, JobState};
use crate::status::{Snapshot, human_span, human_time, redact};
use crate::store::JobFilter;
use crate::web::AppState;
use crate::web::api::{EnvironmentView, environment_views};

/// Escape text for HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #fff; --fg: #1f2328; --muted: #59636e; --card: #f6f8fa;
  --line: #d1d9e0; --ok: #1a7f37; --bad: #d1242f; --warn: #9a6700; --link: #0969da; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1;
  --card: #151b23; --line: #3d444d; --ok: #3fb950; --bad: #f85149; --warn: #d29922; --link: #4493f8; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 64rem; padding: 1rem; background: var(--bg); color: var(--fg);
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
a { color: var(--link); }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
.muted { color: var(--muted); font-size: .9rem; }
.envs { display: grid; grid-template-columns: repeat(auto-fit, minmax(18rem, 1fr)); gap: .75rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .75rem 1rem; }
.card h3 { margin: 0 0 .25rem; font-size: 1.1rem; }
.state { font-weight: 600; } .free { color: var(--ok); } .held { color: var(--warn); } .dirty { color: var(--bad); } .frozen { color: var(--bad); }
ul { padding-left: 1.2rem; margin: .25rem 0; }
code, pre { font: .85rem/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .75rem;
  overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
.scroll { overflow-x: auto; }
"#;

fn layout(title: &str, refresh: Option<u32>, body: &str) -> Response {
    let refresh = refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn unavailable() -> Response {
    let mut r = layout(
        "deploybot",
        Some(30),
        "<h1>deploybot</h1><p>The database is unavailable right now; this page tries again by itself.</p>",
    );
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

fn pr_link(pr: &str) -> String {
    match pr.split_once('#') {
        Some((repo, n)) => format!(
            "<a href=\"https://github.com/{}/pull/{}\">{}</a>",
            esc(repo),
            esc(n),
            esc(pr)
        ),
        None => esc(pr),
    }
}

fn environment_card(env: &EnvironmentView, now_ms: i64) -> String {
    let mut out = format!("<div class=\"card\"><h3>{}</h3>", esc(&env.name));
    if let Some(url) = &env.url {
        out.push_str(&format!(
            "<div class=\"muted\"><a href=\"{}\">{}</a></div>",
            esc(url),
            esc(url)
        ));
    }
    if let Some(frozen) = &env.frozen {
        out.push_str(&format!(
            "<p class=\"state frozen\">❄️ {} · by {} · no new deployment takes it</p>",
            esc(&crate::status::freeze_text(&frozen.freeze)),
            esc(&frozen.freeze.by)
        ));
    }
    match &env.holder {
        None => {
            let (class, text) = if env.dirty {
                (
                    "dirty",
                    "free · dirty: cleaned up before the next deployment".to_string(),
                )
            } else if let Some(r) = &env.restored {
                let at =
                    r.at.as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| human_time(t.timestamp_millis()))
                        .unwrap_or_default();
                (
                    "free",
                    format!(
                        "free · <a href=\"/jobs/{}\">restored to {} at {at}</a>",
                        r.job,
                        esc(&r.base)
                    ),
                )
            } else {
                ("free", "free".to_string())
            };
            out.push_str(&format!("<p class=\"state {class}\">{text}</p>"));
        }
        Some(h) => {
            let until = env
                .held_until
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis());
            let left = match (h.state, until) {
                (JobState::Running, _) => format!("deploying: {}", esc(h.step.as_str())),
                (_, Some(u)) if u > now_ms => {
                    format!("{} left (until {})", human_span(u - now_ms), human_time(u))
                }
                (_, Some(_)) => "hold expired".into(),
                _ => String::new(),
            };
            let (held, reason) = match &h.lock {
                Some(lock) => (
                    "locked",
                    lock.reason
                        .as_deref()
                        .map(|r| format!(" · reason: <q>{}</q>", esc(r)))
                        .unwrap_or_default(),
                ),
                None => ("held", String::new()),
            };
            out.push_str(&format!(
                "<p class=\"state held\">{held} by <a href=\"/jobs/{}\">request #{}</a> of @{}{reason} · {left}</p>",
                h.job,
                h.job,
                esc(&h.requested_by)
            ));
            if !h.pull_requests.is_empty() {
                let prs: Vec<String> = h.pull_requests.iter().map(|p| pr_link(p)).collect();
                out.push_str(&format!("<div>PRs: {}</div>", prs.join(", ")));
            }
            if !h.commits.is_empty() {
                out.push_str("<ul>");
                for c in &h.commits {
                    out.push_str(&format!(
                        "<li>{} {} <code>{}</code></li>",
                        esc(&c.component),
                        esc(&c.reference),
                        esc(c.sha.get(..12).unwrap_or(&c.sha))
                    ));
                }
                out.push_str("</ul>");
            }
            if !h.images.is_empty() {
                out.push_str("<details><summary class=\"muted\">images</summary><ul>");
                for image in &h.images {
                    out.push_str(&format!("<li><code>{}</code></li>", esc(image)));
                }
                out.push_str("</ul></details>");
            }
        }
    }
    if env.queue.is_empty() {
        out.push_str("<div class=\"muted\">queue: empty</div>");
    } else {
        out.push_str("<div>queue:</div><ol>");
        for q in &env.queue {
            let prs: Vec<String> = q.pull_requests.iter().map(|p| pr_link(p)).collect();
            let what = match &q.lock {
                Some(_) => "lock".to_string(),
                None => prs.join(", "),
            };
            let start = q
                .estimated_start
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .filter(|t| t.timestamp_millis() > now_ms + 60_000)
                .map(|t| {
                    format!(
                        " · <span class=\"muted\">estimated start {} (an estimate)</span>",
                        human_time(t.timestamp_millis())
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<li><a href=\"/jobs/{}\">#{}</a> @{} {what}{start}</li>",
                q.job,
                q.job,
                esc(&q.requested_by),
            ));
        }
        out.push_str("</ol>");
    }
    out.push_str("</div>");
    out
}

/// `GET /`: environments, holders, time left, queues, recent requests.
pub async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    let Ok(envs) = environment_views(&state).await else {
        return unavailable();
    };
    let Ok(jobs) = state
        .store
        .list_jobs(&JobFilter {
            limit: 20,
            ..JobFilter::default()
        })
        .await
    else {
        return unavailable();
    };
    let now = state.store.now_ms();
    let mut body = format!(
        "<h1>deploybot</h1><div class=\"muted\">{} · refreshes every 15 s · \
         <a href=\"/api/v1/environments\">JSON</a></div><h2>Environments</h2><div class=\"envs\">",
        human_time(now)
    );
    for env in &envs {
        body.push_str(&environment_card(env, now));
    }
    body.push_str("</div><h2>Recent requests</h2>");
    if jobs.is_empty() {
        body.push_str("<p class=\"muted\">none yet</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><tr><th>#</th><th>where</th><th>by</th>\
             <th>env</th><th>outcome</th><th>took</th></tr>",
        );
        for job in &jobs {
            // Words and colours, not emoji: they read the same in every font.
            let step = esc(job.step.as_str());
            let outcome = match (job.state, job.conclusion) {
                (JobState::Queued, _) => format!("<span class=\"held\">queued ({step})</span>"),
                (JobState::Running, _) => format!("<span class=\"held\">running: {step}</span>"),
                (_, Some(Conclusion::Success)) => "<span class=\"free\">success</span>".into(),
                (_, Some(Conclusion::Failure)) => {
                    format!("<span class=\"dirty\">failed at {step}</span>")
                }
                (_, Some(Conclusion::TimedOut)) => {
                    format!("<span class=\"dirty\">timed out at {step}</span>")
                }
                (_, Some(other)) => format!("<span class=\"muted\">{other}</span>"),
                (other, None) => esc(other.as_str()),
            };
            let created = chrono::DateTime::parse_from_rfc3339(&job.created_at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(now);
            let took = job
                .finished_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| human_span(t.timestamp_millis() - created))
                .unwrap_or_default();
            let place = match job.number {
                Some(n) if n > 0 => pr_link(&format!("{}#{n}", job.repo)),
                _ => esc(&job.repo),
            };
            body.push_str(&format!(
                "<tr><td><a href=\"/jobs/{}\">{}</a></td><td>{place}</td><td>@{}</td>\
                 <td>{}</td><td>{outcome}</td><td>{took}</td></tr>",
                job.id,
                job.id,
                esc(&job.requested_by),
                esc(&job.environment)
            ));
        }
        body.push_str("</table></div>");
    }
    layout("deploybot", Some(15), &body)
}

/// `GET /jobs/{id}`: one request's plan, steps with timings, and full log.
pub async fn job_page(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return crate::web::error(StatusCode::BAD_REQUEST, "a job id is a number");
    };
    let snap = match Snapshot::load(&state.store, &state.config, id).await {
        Ok(Some(snap)) => snap,
        Ok(None) => return crate::web::error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(_) => return unavailable(),
    };
    let job = &snap.job;
    let mut body = format!(
        "<div class=\"muted\"><a href=\"/\">deploybot</a> › request #{id}</div><h1>{} {}</h1>",
        snap.icon(),
        esc(&snap.headline())
    );
    let request = &job.request;
    body.push_str(&format!(
        "<p>@{} asked <code>{} {}</code>{} · base <code>{}</code> · environment <code>{}</code></p>",
        esc(&job.requested_by),
        esc(&snap.command_prefix),
        esc(&request.to_args()),
        match job.number {
            Some(n) if n > 0 => format!(" on {}", pr_link(&format!("{}#{n}", job.repo))),
            _ => String::new(),
        },
        esc(&job.base),
        esc(&job.environment)
    ));
    if let Some(error) = &job.error {
        body.push_str(&format!("<p><strong>{}</strong></p>", esc(&redact(error))));
    }
    if let Some(excerpt) = snap.excerpt() {
        body.push_str(&format!("<pre>{}</pre>", esc(&excerpt)));
    }
    // Components and their commits.
    let pinned = job.pins();
    body.push_str("<h2>Components</h2><div class=\"scroll\"><table><tr><th>component</th><th>ref</th><th>commit</th></tr>");
    for r in &request.refs {
        let sha = pinned
            .iter()
            .find(|p| p.component == r.component && p.reference == r.reference)
            .map(|p| {
                format!(
                    "<a href=\"https://github.com/{}/commit/{}\"><code>{}</code></a>",
                    esc(&p.repo),
                    esc(&p.sha),
                    esc(p.sha.get(..12).unwrap_or(&p.sha))
                )
            })
            .unwrap_or_else(|| "not pinned yet".into());
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{sha}</td></tr>",
            esc(&r.component),
            esc(&r.reference.to_string())
        ));
    }
    body.push_str("</table></div>");
    if let Some(plan) = &job.plan {
        body.push_str("<h2>Plan</h2><div class=\"scroll\"><table><tr><th>image</th><th>how</th><th>deployed</th></tr>");
        for image in &plan.images {
            body.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&image.reference()),
                esc(image.action.as_str()),
                if image.deployed { "yes" } else { "no" }
            ));
        }
        body.push_str("</table></div>");
    }
    body.push_str(
        "<h2>Steps</h2><div class=\"scroll\"><table><tr><th>step</th><th>time</th><th></th></tr>",
    );
    for line in snap.step_lines() {
        body.push_str(&format!(
            "<tr><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            line.icon,
            esc(line.step.as_str()),
            esc(&line.time),
            esc(&line.note)
        ));
    }
    body.push_str("</table></div><h2>Log</h2><pre>");
    for e in &snap.events {
        body.push_str(&format!(
            "{} [{}] {}\n",
            esc(&e.at),
            esc(e.step.as_str()),
            esc(&redact(&e.message))
        ));
    }
    body.push_str("</pre>");
    let refresh = snap.active().then_some(5);
    layout(&format!("deploybot request #{id}"), refresh, &body)
}

/// The cookie a browser login is kept in.
const SESSION_COOKIE: &str = "deploybot_session";

fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The token of an `Authorization: Bearer <token>` (or `token <token>`) header.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::to_string)
}

/// With `web.require_login`, the pages and the read API are for people
/// allowed to deploy: a GitHub token (bearer or the login cookie) of a user
/// with the configured permission on one of the components' repositories,
/// or on the allow-list.
pub async fn require_login(
    State(state): State<Arc<AppState>>,
    client: crate::web::limits::Client,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !state.config.web.require_login {
        return next.run(request).await;
    }
    let page = !request.uri().path().starts_with("/api/");
    let token = bearer(request.headers()).or_else(|| cookie_token(request.headers()));
    let verdict = match token {
        None => Err(crate::actions::ActionError::Unauthorized(
            "this deploybot needs a login: a GitHub token as `Authorization: Bearer`".into(),
        )),
        Some(token) => match state
            .token_check(client, &token, state.actions.may_view(&token))
            .await
        {
            Ok(verdict) => verdict,
            Err(limited) => return crate::web::limits::answer(&limited),
        },
    };
    match verdict {
        Ok(_) => next.run(request).await,
        Err(crate::actions::ActionError::Unauthorized(_)) if page => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
        }
        Err(crate::actions::ActionError::Forbidden(m)) if page => {
            let mut r = layout(
                "deploybot",
                None,
                &format!(
                    "<h1>deploybot</h1><p>{}</p><p><a href=\"/login\">Log in as someone else</a></p>",
                    esc(&m)
                ),
            );
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        Err(e) => crate::web::api::answer(e),
    }
}

fn login_form(message: &str) -> String {
    format!(
        "<h1>deploybot</h1>{message}<p>This deploybot shows its pages to people who may deploy. \
         Paste a GitHub token (for example the output of <code>gh auth token</code>); it is \
         kept in a cookie of this browser only (HttpOnly, 8 hours) and checked with GitHub.</p>\
         <form method=\"post\" action=\"/login\"><input type=\"password\" name=\"token\" \
         autocomplete=\"off\" required style=\"width:100%;max-width:30rem\"> \
         <button type=\"submit\">Log in</button></form>"
    )
}

/// `GET /login`: the form.
pub async fn login_page() -> Response {
    layout("deploybot: log in", None, &login_form(""))
}

/// Decode one `application/x-www-form-urlencoded` value.
fn form_value(body: &str, name: &str) -> Option<String> {
    let raw = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /login`: check the token, keep it in the login cookie.
pub async fn login(
    State(state): State<Arc<AppState>>,
    client: crate::web::limits::Client,
    body: String,
) -> Response {
    let Some(token) = form_value(&body, "token").map(|t| t.trim().to_string()) else {
        return layout(
            "deploybot: log in",
            None,
            &login_form("<p><strong>Paste a token.</strong></p>"),
        );
    };
    let verdict = match state
        .token_check(client, &token, state.actions.may_view(&token))
        .await
    {
        Ok(verdict) => verdict,
        Err(limited) => return crate::web::limits::answer(&limited),
    };
    match verdict {
        Ok(login) => {
            tracing::info!(login, "logged in to the pages");
            let secure = if state.config.bot.public_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_string()),
                    (
                        header::SET_COOKIE,
                        format!(
                            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800{secure}"
                        ),
                    ),
                ],
            )
                .into_response()
        }
        Err(e) => {
            let message = match e {
                crate::actions::ActionError::Unauthorized(m)
                | crate::actions::ActionError::Forbidden(m)
                | crate::actions::ActionError::Unavailable(m)
                | crate::actions::ActionError::BadRequest(m)
                | crate::actions::ActionError::NotFound(m)
                | crate::actions::ActionError::Conflict(m) => m,
            };
            let mut r = layout(
                "deploybot: log in",
                None,
                &login_form(&format!("<p><strong>{}</strong></p>", esc(&message))),
            );
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

/// `GET /logout`: forget the login cookie.
pub async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}
