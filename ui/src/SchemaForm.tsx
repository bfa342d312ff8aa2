// A form drawn from the OpenAPI schema of a kind's spec, as its CRD has it: every field typed,
// with its description, a mark when required, and the server's error at the field it is about.

import { useState } from "react";

export interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: string[];
  additionalProperties?: Schema | boolean;
}

type Json = unknown;
type Value = Record<string, Json>;
/** Server errors by field path (`spec.workload.name`). */
export type Errors = Record<string, string>;

/** How a field is edited. */
type Shape = "object" | "objects" | "choices" | "lines" | "map" | "boolean" | "number" | "select" | "text" | "json";

function shape(schema: Schema): Shape {
  switch (schema.type) {
    case "object":
      if (schema.properties) return "object";
      if (typeof schema.additionalProperties === "object" && schema.additionalProperties.type === "string") return "map";
      return "json";
    case "array":
      if (schema.items?.type === "object" && schema.items.properties) return "objects";
      if (schema.items?.enum) return "choices";
      if (schema.items?.type === "string" || schema.items?.type === "integer" || schema.items?.type === "number") return "lines";
      return "json";
    case "boolean":
      return "boolean";
    case "integer":
    case "number":
      return "number";
    case "string":
      return schema.enum ? "select" : "text";
    default:
      return "json";
  }
}

/** The paths whose errors the form shows at a field, each with whether deeper paths belong to it too. */
function claimed(schema: Schema, value: Json, path: string, out: [string, boolean][]) {
  const kind = shape(schema);
  if (kind === "object") {
    const object = (value ?? {}) as Value;
    for (const [key, child] of Object.entries(schema.properties ?? {})) {
      if (object[key] !== undefined || schema.required?.includes(key) || shape(child) !== "object") {
        claimed(child, object[key], `${path}.${key}`, out);
      }
    }
    out.push([path, false]);
  } else if (kind === "objects") {
    ((value as Json[]) ?? []).forEach((item, i) => claimed(schema.items!, item, `${path}.${i}`, out));
    out.push([path, false]);
  } else {
    out.push([path, kind !== "boolean" && kind !== "number" && kind !== "select" && kind !== "text"]);
  }
}

/** The errors no field of the form shows. */
export function unclaimed(schema: Schema, value: Json, errors: Errors): string[] {
  const paths: [string, boolean][] = [];
  claimed(schema, value, "spec", paths);
  return Object.entries(errors)
    .filter(([field]) => !paths.some(([path, deeper]) => field === path || (deeper && field.startsWith(`${path}.`))))
    .map(([field, message]) => (field ? `${field}: ${message}` : message));
}

function errorsAt(errors: Errors, path: string, deeper: boolean): string | undefined {
  const found = Object.entries(errors).filter(([field]) => field === path || (deeper && field.startsWith(`${path}.`)));
  return found.length ? found.map(([field, message]) => (field === path ? message : `${field.slice(path.length + 1)}: ${message}`)).join("; ") : undefined;
}

/** `otelServiceName` → `Otel service name`. */
function label(name: string): string {
  const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A copy of `object` with `key` set, or left out when `value` is undefined. */
function withKey(object: Value | undefined, key: string, value: Json): Value {
  const copy = { ...(object ?? {}) };
  if (value === undefined) delete copy[key];
  else copy[key] = value;
  return copy;
}

export function SchemaForm({ schema, value, onChange, errors }: { schema: Schema; value: Value; onChange: (value: Value) => void; errors: Errors }) {
  return <Fields schema={schema} value={value} onChange={onChange} path="spec" errors={errors} />;
}

function Fields({ schema, value, onChange, path, errors }: { schema: Schema; value: Value | undefined; onChange: (value: Value) => void; path: string; errors: Errors }) {
  return (
    <>
      {Object.entries(schema.properties ?? {}).map(([key, child]) => (
        <Field
          key={key}
          name={key}
          schema={child}
          required={schema.required?.includes(key) ?? false}
          value={value?.[key]}
          onChange={(v) => onChange(withKey(value, key, v))}
          path={`${path}.${key}`}
          errors={errors}
        />
      ))}
    </>
  );
}

function Field({
  name,
  schema,
  required,
  value,
  onChange,
  path,
  errors,
}: {
  name: string;
  schema: Schema;
  required: boolean;
  value: Json;
  onChange: (value: Json) => void;
  path: string;
  errors: Errors;
}) {
  const kind = shape(schema);
  const title = (
    <span>
      {label(name)} {required && <i className="required">*</i>}
    </span>
  );
  const help = schema.description && <small className="help">{schema.description}</small>;
  const error = errorsAt(errors, path, !["object", "objects", "boolean", "number", "select", "text"].includes(kind));
  const common = { "aria-label": path, "aria-invalid": !!error };

  if (kind === "object") {
    if (value === undefined && !required) {
      return (
        <div className="field optional-block">
          <button type="button" onClick={() => onChange({})} aria-label={`add ${path}`}>
            + {label(name)}
          </button>
          {help}
        </div>
      );
    }
    return (
      <fieldset className="field block">
        <legend>
          {title}
          {!required && (
            <button type="button" className="link" onClick={() => onChange(undefined)} aria-label={`remove ${path}`}>
              remove
            </button>
          )}
        </legend>
        {help}
        {error && <em className="field-error">{error}</em>}
        <Fields schema={schema} value={value as Value | undefined} onChange={onChange} path={path} errors={errors} />
      </fieldset>
    );
  }

  if (kind === "objects") {
    const items = (value as Value[] | undefined) ?? [];
    const set = (next: Value[]) => onChange(next.length ? next : undefined);
    return (
      <fieldset className="field block">
        <legend>{title}</legend>
        {help}
        {error && <em className="field-error">{error}</em>}
        {items.map((item, i) => (
          <fieldset key={i} className="field block item">
            <legend>
              {label(name)} {i + 1}
              <button type="button" className="link" onClick={() => set(items.filter((_, j) => j !== i))}>
                remove
              </button>
            </legend>
            <Fields schema={schema.items!} value={item} onChange={(v) => set(items.map((old, j) => (j === i ? v : old)))} path={`${path}.${i}`} errors={errors} />
          </fieldset>
        ))}
        <button type="button" onClick={() => set([...items, {}])} aria-label={`add to ${path}`}>
          + add
        </button>
      </fieldset>
    );
  }

  let input;
  switch (kind) {
    case "boolean":
      input = <input type="checkbox" checked={value === true} onChange={(e) => onChange(e.target.checked ? true : undefined)} {...common} />;
      break;
    case "number":
      input = (
        <input
          type="number"
          step={schema.type === "integer" ? 1 : "any"}
          value={value === undefined ? "" : String(value)}
          onChange={(e) => onChange(e.target.value === "" ? undefined : Number(e.target.value))}
          {...common}
        />
      );
      break;
    case "select":
      input = (
        <select value={(value as string) ?? ""} onChange={(e) => onChange(e.target.value || undefined)} {...common}>
          <option value="">—</option>
          {schema.enum!.map((v) => (
            <option key={v}>{v}</option>
          ))}
        </select>
      );
      break;
    case "text":
      input = <input value={(value as string) ?? ""} onChange={(e) => onChange(e.target.value || undefined)} autoComplete="off" {...common} />;
      break;
    case "choices": {
      const chosen = (value as string[] | undefined) ?? [];
      input = (
        <span className="choices" {...common}>
          {schema.items!.enum!.map((v) => (
            <label key={v} className="inline">
              <input
                type="checkbox"
                checked={chosen.includes(v)}
                onChange={(e) => {
                  const next = e.target.checked ? [...chosen, v] : chosen.filter((x) => x !== v);
                  onChange(next.length ? next : undefined);
                }}
              />
              {v}
            </label>
          ))}
        </span>
      );
      break;
    }
    case "lines":
      input = (
        <TextAs
          value={value}
          show={(v) => ((v as Json[] | undefined) ?? []).join("\n")}
          read={(text) => {
            const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
            const numbers = schema.items?.type !== "string";
            return lines.length ? (numbers ? lines.map(Number) : lines) : undefined;
          }}
          placeholder="one per line"
          onChange={onChange}
          common={common}
        />
      );
      break;
    case "map":
      input = (
        <TextAs
          value={value}
          show={(v) =>
            Object.entries((v as Record<string, string> | undefined) ?? {})
              .map(([k, x]) => `${k}=${x}`)
              .join("\n")
          }
          read={(text) => {
            const pairs = text
              .split("\n")
              .filter((l) => l.includes("="))
              .map((l) => [l.slice(0, l.indexOf("=")).trim(), l.slice(l.indexOf("=") + 1).trim()]);
            return pairs.length ? Object.fromEntries(pairs) : undefined;
          }}
          placeholder="key=value, one per line"
          onChange={onChange}
          common={common}
        />
      );
      break;
    default:
      input = (
        <TextAs
          value={value}
          show={(v) => (v === undefined ? "" : JSON.stringify(v, null, 2))}
          read={(text) => (text.trim() ? JSON.parse(text) : undefined)}
          placeholder="JSON"
          onChange={onChange}
          common={common}
          mono
        />
      );
  }
  return (
    <label className={kind === "boolean" ? "field check" : "field"}>
      {title}
      {input}
      {help}
      {error && <em className="field-error">{error}</em>}
    </label>
  );
}

/**
 * A textarea over a value kept as text while it is typed (so a new line or a half-written
 * JSON is not undone); the value changes whenever the text reads.
 */
function TextAs({
  value,
  show,
  read,
  placeholder,
  onChange,
  common,
  mono,
}: {
  value: Json;
  show: (value: Json) => string;
  read: (text: string) => Json;
  placeholder: string;
  onChange: (value: Json) => void;
  common: Record<string, unknown>;
  mono?: boolean;
}) {
  const [text, setText] = useState(() => show(value));
  const [unreadable, setUnreadable] = useState<string>();
  return (
    <>
      <textarea
        className={mono ? "mono" : undefined}
        rows={3}
        value={text}
        placeholder={placeholder}
        onChange={(e) => {
          setText(e.target.value);
          try {
            onChange(read(e.target.value));
            setUnreadable(undefined);
          } catch (error) {
            setUnreadable(String(error));
          }
        }}
        {...common}
      />
      {unreadable && <em className="field-error">{unreadable}</em>}
    </>
  );
}
