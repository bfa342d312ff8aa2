// The shell: sign-in, navigation, theme, and the live link that tells pages when to refresh.

import { useCallback, useEffect, useState } from "react";
import { gql, signIn, signOut, subscribe, Unauthorized, type Link } from "./api";
import { A, Live, Navigate, usePath } from "./common";
import { Destinations } from "./pages/Destinations";
import { Agent, Fleet } from "./pages/Fleet";
import { OverviewPage } from "./pages/Overview";
import { Problems } from "./pages/Problems";
import { Resources } from "./pages/Resources";
import { Rollouts } from "./pages/Rollouts";

const NAV: [string, string][] = [
  ["/", "Overview"],
  ["/fleet", "Fleet"],
  ["/rollouts", "Rollouts"],
  ["/sources", "Sources"],
  ["/destinations", "Destinations"],
  ["/actions", "Actions"],
  ["/rules", "Rules"],
  ["/sampling", "Sampling"],
  ["/problems", "Problems"],
];

type Session = "checking" | "in" | "out";

export function App() {
  const [path, go] = usePath();
  const [session, setSession] = useState<Session>("checking");
  const [theme, setTheme] = useState<string>(
    () => localStorage.getItem("theme") ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"),
  );
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("theme", theme);
  }, [theme]);

  // A sign-in link carries a one-time code in its fragment: trade it for a session, then
  // drop it from the address bar.
  useEffect(() => {
    const code = new URLSearchParams(location.hash.slice(1)).get("login");
    const check = () =>
      gql("{ generation }")
        .then(() => setSession("in"))
        .catch((e) => setSession(e instanceof Unauthorized ? "out" : "in"));
    if (code) {
      history.replaceState(null, "", location.pathname);
      signIn({ code }).finally(check);
    } else {
      check();
    }
  }, []);

  const [version, setVersion] = useState(0);
  const [link, setLink] = useState<Link>("connecting");
  const refresh = useCallback(() => setVersion((v) => v + 1), []);
  const signedOut = useCallback(() => setSession("out"), []);
  useEffect(() => {
    if (session !== "in") return;
    return subscribe("subscription { fleetChanged { total applied applying failed disconnected other } }", refresh, setLink);
  }, [session, refresh]);

  if (session === "checking") return <div className="splash">odigos</div>;
  if (session === "out") return <SignIn onIn={() => setSession("in")} />;

  return (
    <Navigate.Provider value={go}>
      <Live.Provider value={{ version, link, refresh, signedOut }}>
        <div className="shell">
          <nav className="side">
            <div className="brand">
              odigos<span>-rs</span>
            </div>
            {NAV.map(([to, label]) => (
              <A key={to} to={to} className={(to === "/" ? path === "/" : path.startsWith(to)) ? "active" : ""}>
                {label}
              </A>
            ))}
            <div className="side-foot">
              <span className={`link-state ${link}`} data-testid="link-state" role="status">
                {link === "live" ? "live" : link === "reconnecting" ? "reconnecting…" : "connecting…"}
              </span>
              <button onClick={() => setTheme(theme === "dark" ? "light" : "dark")} aria-label="switch theme">
                {theme === "dark" ? "Light theme" : "Dark theme"}
              </button>
              <button onClick={() => signOut().then(() => setSession("out"))}>Sign out</button>
            </div>
          </nav>
          <main className={link === "reconnecting" ? "stale" : ""}>{route(path)}</main>
        </div>
      </Live.Provider>
    </Navigate.Provider>
  );
}

function route(path: string) {
  if (path.startsWith("/fleet/")) return <Agent uid={decodeURIComponent(path.slice("/fleet/".length))} />;
  switch (path) {
    case "/fleet":
      return <Fleet />;
    case "/rollouts":
      return <Rollouts />;
    case "/destinations":
      return <Destinations />;
    case "/sources":
      return <Resources page="sources" />;
    case "/actions":
      return <Resources page="actions" />;
    case "/rules":
      return <Resources page="rules" />;
    case "/sampling":
      return <Resources page="sampling" />;
    case "/problems":
      return <Problems />;
    default:
      return <OverviewPage />;
  }
}

function SignIn({ onIn }: { onIn: () => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string>();
  return (
    <div className="signin">
      <form
        className="panel"
        onSubmit={(e) => {
          e.preventDefault();
          signIn({ token })
            .then(onIn)
            .catch((err) => setError(String(err.message ?? err)));
        }}
      >
        <h1>odigos</h1>
        <p>Open the sign-in link that <code>odigos up</code> printed, or paste the token (in <code>.odigos/token</code>).</p>
        <label className="field">
          <span>Token</span>
          <input type="password" value={token} onChange={(e) => setToken(e.target.value)} aria-label="token" autoFocus />
          {error && <em className="field-error">{error}</em>}
        </label>
        <button className="primary" type="submit">
          Sign in
        </button>
      </form>
    </div>
  );
}
