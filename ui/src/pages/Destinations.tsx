// Destinations: each with whether its config is in force and whether data reaches it, and a
// form generated from the catalog's description of each destination type.

import { useContext, useMemo, useState, type FormEvent } from "react";
import {
  createResource,
  deleteResource,
  setDisabled,
  testDestination,
  updateResource,
  type Condition,
  type DestinationTest,
  type FieldError,
} from "../api";
import { Badge, ConditionBadge, Empty, Failure, Live, Page, RolloutProgress, useChange, useQuery } from "../common";

interface Field {
  name: string;
  displayName: string;
  kind: string;
  required: boolean;
  secret: boolean;
  tooltip: string | null;
  values: string[];
  default: string | null;
}

interface DestinationType {
  name: string;
  displayName: string;
  category: string;
  signals: string[];
  fields: Field[];
}

interface Destination {
  name: string;
  destinationType: string;
  signals: string[];
  condition: Condition;
  health: Condition | null;
  data: { key: string; value: string }[];
  yaml: string | null;
}

const DESTINATIONS = `{ destinations { name destinationType signals condition { kind status reason message }
  health { kind status reason message since } data { key value } }
  destinationTypes { name displayName category signals fields { name displayName kind required secret tooltip values default } } }`;

export function Destinations() {
  const { data, error, reload } = useQuery<{ destinations: Destination[]; destinationTypes: DestinationType[] }>(DESTINATIONS);
  const { refresh } = useContext(Live);
  const [editing, setEditing] = useState<Destination | "new" | undefined>();
  const [rolling, setRolling] = useState(false);
  const done = () => {
    setEditing(undefined);
    setRolling(true);
    reload();
    refresh();
  };
  const [failure, act] = useChange(reload, () => setRolling(true));
  const destinations = data?.destinations ?? [];
  return (
    <Page
      title="Destinations"
      actions={
        <button className="primary" onClick={() => setEditing("new")}>
          Add destination
        </button>
      }
    >
      <Failure error={error ?? failure} />
      {rolling && <RolloutProgress onClose={() => setRolling(false)} />}
      {editing && data && (
        <DestinationForm
          types={data.destinationTypes}
          existing={editing === "new" ? undefined : editing}
          onDone={done}
          onCancel={() => setEditing(undefined)}
        />
      )}
      {data && destinations.length === 0 && !editing && (
        <Empty title="No destination yet">
          <p>Telemetry goes nowhere until a destination takes it.</p>
          <button className="primary" onClick={() => setEditing("new")}>
            Add one
          </button>
        </Empty>
      )}
      <div className="table">
        {destinations.map((d) => (
          <div key={d.name} className={`row destinations ${d.health?.status === "False" ? "failed" : ""}`} data-testid="destination-row">
            <span className="strong">{d.name}</span>
            <span>{d.destinationType}</span>
            <span className="muted">{d.signals.join(", ").toLowerCase()}</span>
            <span>
              <ConditionBadge condition={d.condition} />
            </span>
            <span>{d.health ? <ConditionBadge condition={d.health} /> : <span className="muted">—</span>}</span>
            <span className="ellipsis muted" title={[d.condition.message, d.health?.message].filter(Boolean).join("; ")}>
              {d.health?.status === "False" ? d.health.message : d.condition.message}
            </span>
            <span className="row-actions">
              <button onClick={() => setEditing(d)}>Edit</button>
              <button onClick={() => act(setDisabled("DESTINATION", d.name, d.condition.reason !== "Disabled"))}>
                {d.condition.reason === "Disabled" ? "Enable" : "Disable"}
              </button>
              <button className="danger" onClick={() => confirm(`Delete ${d.name}?`) && act(deleteResource("DESTINATION", d.name))}>
                Delete
              </button>
            </span>
          </div>
        ))}
      </div>
    </Page>
  );
}

function DestinationForm({
  types,
  existing,
  onDone,
  onCancel,
}: {
  types: DestinationType[];
  existing?: Destination;
  onDone: () => void;
  onCancel: () => void;
}) {
  const sorted = useMemo(() => [...types].sort((a, b) => a.displayName.localeCompare(b.displayName)), [types]);
  const [typeName, setTypeName] = useState(existing?.destinationType ?? "");
  const type = types.find((t) => t.name === typeName);
  const [name, setName] = useState(existing ? existing.name.split("/").pop()! : "");
  const [signals, setSignals] = useState<string[]>(existing?.signals ?? []);
  const [values, setValues] = useState<Record<string, string>>(
    Object.fromEntries((existing?.data ?? []).map((d) => [d.key, d.value])),
  );
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const [tested, setTested] = useState<DestinationTest | undefined>();

  const choose = (t: string) => {
    setTypeName(t);
    const chosen = types.find((x) => x.name === t);
    setSignals(chosen?.signals ?? []);
    setValues(Object.fromEntries((chosen?.fields ?? []).filter((f) => f.default).map((f) => [f.name, f.default!])));
    setErrors({});
  };

  const spec = () => {
    const data = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));
    return { type: type!.name, signals, data };
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!type) return;
    setBusy(true);
    try {
      const result = existing ? await updateResource("DESTINATION", name, spec()) : await createResource("DESTINATION", name, spec());
      if (result.ok) {
        onDone();
        return;
      }
      setErrors(byField(result.errors));
    } catch (error) {
      setErrors({ "@form": String(error) });
    } finally {
      setBusy(false);
    }
  };

  const test = async () => {
    if (!type) return;
    setBusy(true);
    setTested(undefined);
    try {
      const result = await testDestination(name || "unnamed", spec());
      setErrors(byField(result.errors));
      setTested(result);
    } catch (error) {
      setErrors({ "@form": String(error) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="panel form" onSubmit={submit} noValidate>
      <h2>{existing ? `Edit ${existing.name}` : "Add a destination"}</h2>
      <label className="field">
        <span>Type</span>
        <select value={typeName} onChange={(e) => choose(e.target.value)} disabled={!!existing} aria-label="destination type">
          <option value="">choose…</option>
          {sorted.map((t) => (
            <option key={t.name} value={t.name}>
              {t.displayName} ({t.category})
            </option>
          ))}
        </select>
      </label>
      {type && (
        <>
          <label className="field">
            <span>
              Name <i className="required">*</i>
            </span>
            <input value={name} onChange={(e) => setName(e.target.value)} disabled={!!existing} aria-label="name" aria-invalid={!!errors["@name"]} />
            {errors["@name"] && <em className="field-error">{errors["@name"]}</em>}
          </label>
          <fieldset className="field">
            <legend>Signals</legend>
            {type.signals.map((s) => (
              <label key={s} className="inline">
                <input
                  type="checkbox"
                  checked={signals.includes(s)}
                  onChange={(e) => setSignals(e.target.checked ? [...signals, s] : signals.filter((x) => x !== s))}
                />
                {s.toLowerCase()}
              </label>
            ))}
            {errors["@signals"] && <em className="field-error">{errors["@signals"]}</em>}
          </fieldset>
          {type.fields.map((f) => (
            <FieldInput key={f.name} field={f} value={values[f.name] ?? ""} error={errors[f.name]} editing={!!existing} onChange={(v) => setValues({ ...values, [f.name]: v })} />
          ))}
          {errors["@form"] && <div className="error-box">{errors["@form"]}</div>}
          {tested && tested.exporters.length > 0 && <TestOutcome tested={tested} />}
        </>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={!type || busy}>
          {existing ? "Save" : "Create"}
        </button>
        <button type="button" onClick={test} disabled={!type || busy}>
          Test connection
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/** Server errors keyed by the form field they belong to: a data field's name, `@name`, `@signals`, or `@form`. */
function byField(errors: FieldError[]): Record<string, string> {
  const keyed: Record<string, string> = {};
  for (const error of errors) {
    const field = error.field ?? "";
    const key = field.startsWith("spec.data.")
      ? field.slice("spec.data.".length)
      : field === "metadata.name"
        ? "@name"
        : field.startsWith("spec.signals")
          ? "@signals"
          : "@form";
    keyed[key] = keyed[key] ? `${keyed[key]}; ${error.message}` : error.message;
  }
  return keyed;
}

/** What sending one empty export to each of the destination's exporters found. */
function TestOutcome({ tested }: { tested: DestinationTest }) {
  return (
    <div className={tested.ok ? "ok-box" : "error-box"} data-testid="test-outcome" role="status">
      {tested.exporters.map((e) => (
        <div key={e.id}>
          <span className="mono">{e.id}</span> ({e.signals.join(", ")}): {e.error ?? "took an empty export"}
        </div>
      ))}
    </div>
  );
}

function FieldInput({
  field,
  value,
  error,
  editing,
  onChange,
}: {
  field: Field;
  value: string;
  error?: string;
  editing: boolean;
  onChange: (value: string) => void;
}) {
  const label = (
    <span>
      {field.displayName} {field.required && <i className="required">*</i>}
      {field.secret && <Badge tone="idle">secret</Badge>}
    </span>
  );
  const common = { "aria-label": field.name, "aria-invalid": !!error, title: field.tooltip ?? undefined };
  let input;
  if (field.kind === "boolean") {
    input = <input type="checkbox" checked={value === "true"} onChange={(e) => onChange(e.target.checked ? "true" : "false")} {...common} />;
  } else if (field.kind === "select") {
    input = (
      <select value={value} onChange={(e) => onChange(e.target.value)} {...common}>
        <option value="">—</option>
        {field.values.map((v) => (
          <option key={v}>{v}</option>
        ))}
      </select>
    );
  } else if (["headers", "list", "pem"].includes(field.kind)) {
    input = <textarea rows={3} value={value} onChange={(e) => onChange(e.target.value)} {...common} />;
  } else {
    input = (
      <input
        type={field.secret ? "password" : field.kind === "number" ? "number" : "text"}
        value={value}
        placeholder={field.secret && editing ? "unchanged (write-only)" : (field.default ?? "")}
        autoComplete="off"
        onChange={(e) => onChange(e.target.value)}
        {...common}
      />
    );
  }
  return (
    <label className="field">
      {label}
      {input}
      {field.tooltip && <small className="help">{field.tooltip}</small>}
      {error && <em className="field-error">{error}</em>}
    </label>
  );
}
