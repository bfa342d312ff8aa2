// The GraphQL API: queries and mutations over POST /graphql, subscriptions over the
// graphql-transport-ws protocol on the same path.

/** The session is missing or over: the page asks to sign in. */
export class Unauthorized extends Error {}

export async function gql<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
  const response = await fetch("/graphql", {
    method: "POST",
    credentials: "same-origin",
    // The server wants this header on every change made with the session cookie.
    headers: { "content-type": "application/json", "x-odigos-csrf": "1" },
    body: JSON.stringify({ query, variables }),
  });
  if (response.status === 401) throw new Unauthorized(await response.text());
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  const body = await response.json();
  if (body.errors?.length) {
    throw new Error(body.errors.map((e: { message: string }) => e.message).join("; "));
  }
  return body.data as T;
}

/** Trades a one-time login code, or the token, for a session cookie. */
export async function signIn(credentials: { code: string } | { token: string }): Promise<void> {
  const response = await fetch("/api/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(credentials),
  });
  if (!response.ok) throw new Error(await response.text());
}

export async function signOut(): Promise<void> {
  await fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" });
}

export type Link = "connecting" | "live" | "reconnecting";

/**
 * Follows a subscription, reconnecting with backoff (1 s doubling to 30 s) whenever the
 * connection drops. `onLink` says whether what is shown is live. Returns a function that stops.
 */
export function subscribe<T>(
  query: string,
  onData: (data: T) => void,
  onLink: (link: Link) => void,
): () => void {
  let socket: WebSocket | undefined;
  let stopped = false;
  let delay = 1000;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/graphql`, "graphql-transport-ws");
    socket.onopen = () => socket?.send(JSON.stringify({ type: "connection_init" }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      switch (message.type) {
        case "connection_ack":
          delay = 1000;
          onLink("live");
          socket?.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query } }));
          break;
        case "next":
          if (message.payload?.data) onData(message.payload.data as T);
          break;
        case "ping":
          socket?.send(JSON.stringify({ type: "pong" }));
          break;
      }
    };
    socket.onclose = () => {
      if (stopped) return;
      onLink("reconnecting");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30_000);
    };
  };
  onLink("connecting");
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    socket?.close();
  };
}

// What the API returns, as the pages use it.

export type AgentStatus = "UNASSIGNED" | "PENDING" | "APPLYING" | "APPLIED" | "FAILED" | "DISCONNECTED";

export interface Condition {
  kind: string;
  status: string;
  reason: string;
  message: string;
  since?: string | null;
}

export interface FleetSummary {
  total: number;
  applied: number;
  applying: number;
  failed: number;
  disconnected: number;
  other: number;
}

export interface FieldError {
  field: string | null;
  message: string;
}

export interface ChangeResult {
  ok: boolean;
  resource: string;
  errors: FieldError[];
}

export type Kind = "SOURCE" | "DESTINATION" | "ACTION" | "INSTRUMENTATION_RULE" | "SAMPLING";

const CHANGE_FIELDS = "ok resource errors { field message }";

export async function createResource(kind: Kind, name: string, spec: unknown): Promise<ChangeResult> {
  const data = await gql<{ createResource: ChangeResult }>(
    `mutation($kind: Kind!, $name: String!, $spec: JSON!) { createResource(kind: $kind, name: $name, spec: $spec) { ${CHANGE_FIELDS} } }`,
    { kind, name, spec },
  );
  return data.createResource;
}

export async function updateResource(kind: Kind, name: string, spec: unknown): Promise<ChangeResult> {
  const data = await gql<{ updateResource: ChangeResult }>(
    `mutation($kind: Kind!, $name: String!, $spec: JSON!) { updateResource(kind: $kind, name: $name, spec: $spec) { ${CHANGE_FIELDS} } }`,
    { kind, name, spec },
  );
  return data.updateResource;
}

export interface DestinationTest {
  ok: boolean;
  errors: FieldError[];
  exporters: { id: string; signals: string[]; error: string | null }[];
}

/** Builds the destination's exporters on the server and sends each one empty export; saves nothing. */
export async function testDestination(name: string, spec: unknown): Promise<DestinationTest> {
  const data = await gql<{ testDestination: DestinationTest }>(
    `mutation($name: String!, $spec: JSON!) { testDestination(name: $name, spec: $spec) { ok errors { field message } exporters { id signals error } } }`,
    { name, spec },
  );
  return data.testDestination;
}

/** `namespace/name` as the API shows it, split. */
export function split(qualified: string): { namespace: string; name: string } {
  const at = qualified.indexOf("/");
  return at < 0
    ? { namespace: "default", name: qualified }
    : { namespace: qualified.slice(0, at), name: qualified.slice(at + 1) };
}

export async function setDisabled(kind: Kind, qualified: string, disabled: boolean): Promise<ChangeResult> {
  const { namespace, name } = split(qualified);
  const data = await gql<{ setDisabled: ChangeResult }>(
    `mutation($kind: Kind!, $namespace: String!, $name: String!, $disabled: Boolean!) { setDisabled(kind: $kind, namespace: $namespace, name: $name, disabled: $disabled) { ${CHANGE_FIELDS} } }`,
    { kind, namespace, name, disabled },
  );
  return data.setDisabled;
}

export async function deleteResource(kind: Kind, qualified: string): Promise<ChangeResult> {
  const { namespace, name } = split(qualified);
  const data = await gql<{ deleteResource: ChangeResult }>(
    `mutation($kind: Kind!, $namespace: String!, $name: String!) { deleteResource(kind: $kind, namespace: $namespace, name: $name) { ${CHANGE_FIELDS} } }`,
    { kind, namespace, name },
  );
  return data.deleteResource;
}
