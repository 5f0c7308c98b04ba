// The form-logic expression language (the XLSForm / ODK XPath subset), the
// web app's copy of outpost/formexpr.py: the same grammar, coercions and
// functions, checked against the same tests/data/form_logic_conformance.json
// in Chromium (tests/web/test_form_logic_js.py). Change both or neither.
// Why our own and not openrosa-xpath-evaluator: docs/forms.md.
//
// Values: string, number, boolean, and a node-set (an Array of strings: a
// repeat's field read from outside the repeat).

export const MAX_EXPRESSION = 2000;
const MAX_NODES = 400;
const MAX_DEPTH = 40;

export class ExpressionError extends Error {}

const TOKEN =
  /[ \t\r\n]*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)|('[^']*'|"[^"]*")|(\$\{([^}]*)\})|(!=|<=|>=|\.\.|[=<>+\-*(),.])|([A-Za-z_][A-Za-z0-9_\-]*(?::[A-Za-z_][A-Za-z0-9_\-]*)?))/y;
const REF_NAME = /^[a-z][a-z0-9_]{0,62}$/;
const KEYWORD_OPS = new Set(["and", "or", "div", "mod"]);

// name -> [least, most] arguments (most null = any number).
export const FUNCTIONS = {
  selected: [2, 2],
  "count-selected": [1, 1],
  if: [3, 3],
  concat: [0, null],
  "string-length": [0, 1],
  regex: [2, 2],
  today: [0, 0],
  sum: [1, 1],
  count: [1, 1],
  position: [0, 1],
  number: [0, 1],
  string: [0, 1],
  boolean: [1, 1],
  not: [1, 1],
  true: [0, 0],
  false: [0, 0],
  contains: [2, 2],
  "starts-with": [2, 2],
  "ends-with": [2, 2],
  substr: [2, 3],
  int: [1, 1],
  round: [1, 2],
  coalesce: [2, 2],
};

const BINARY = { or: 1, and: 2, "=": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6, div: 6, mod: 6 };

function tokens(text) {
  const out = [];
  const end = text.replace(/[ \t\r\n]+$/, "").length;
  let pos = 0;
  while (pos < end) {
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (!m || TOKEN.lastIndex === pos) {
      throw new ExpressionError(`unexpected ${JSON.stringify(text.slice(pos).trim().slice(0, 20))} at character ${pos + 1}`);
    }
    pos = TOKEN.lastIndex;
    if (m[3] !== undefined) {
      if (!REF_NAME.test(m[4])) throw new ExpressionError(`\${${m[4]}} is not a field name`);
      out.push(["ref", m[4]]);
    } else if (m[1] !== undefined) out.push(["num", m[1]]);
    else if (m[2] !== undefined) out.push(["str", m[2].slice(1, -1)]);
    else if (m[5] !== undefined) out.push(["op", m[5]]);
    else out.push([KEYWORD_OPS.has(m[6]) ? "kw" : "name", m[6]]);
  }
  out.push(["end", ""]);
  return out;
}

class Parser {
  constructor(text) {
    this.toks = tokens(text);
    this.i = 0;
    this.nodes = 0;
  }
  peek() {
    return this.toks[this.i];
  }
  take() {
    return this.toks[this.i++];
  }
  is(tok, kind, val) {
    return tok[0] === kind && tok[1] === val;
  }
  node(...parts) {
    if (++this.nodes > MAX_NODES) throw new ExpressionError(`is too long (more than ${MAX_NODES} parts)`);
    return parts;
  }
  parse() {
    const tree = this.expr(0, 0);
    const [kind, val] = this.peek();
    if (kind !== "end") throw new ExpressionError(`unexpected '${val}' after a complete expression`);
    return tree;
  }
  expr(minPower, depth) {
    if (depth > MAX_DEPTH) throw new ExpressionError(`nests deeper than ${MAX_DEPTH} levels`);
    let left = this.unary(depth);
    for (;;) {
      const [kind, val] = this.peek();
      const power = kind === "op" || kind === "kw" ? BINARY[val] : undefined;
      if (power === undefined || power <= minPower) return left;
      this.take();
      const right = this.expr(power, depth + 1);
      left = this.node("bin", val, left, right);
    }
  }
  unary(depth) {
    if (this.is(this.peek(), "op", "-")) {
      this.take();
      return this.node("neg", this.unary(depth + 1));
    }
    return this.primary(depth);
  }
  primary(depth) {
    const [kind, val] = this.take();
    if (kind === "num") return this.node("num", Number(val));
    if (kind === "str") return this.node("str", val);
    if (kind === "ref") return this.node("ref", val);
    if (kind === "op" && val === ".") return this.node("self");
    if (kind === "op" && val === "..") return this.node("parent");
    if (kind === "op" && val === "(") {
      const inner = this.expr(0, depth + 1);
      if (!this.is(this.take(), "op", ")")) throw new ExpressionError("a '(' is not closed");
      return inner;
    }
    if (kind === "name") {
      if (!this.is(this.peek(), "op", "(")) {
        throw new ExpressionError(`'${val}' is not understood: refer to a field as \${name}, or call a function with ( )`);
      }
      this.take();
      const name = val.startsWith("jr:") ? val.slice(3) : val;
      if (!Object.hasOwn(FUNCTIONS, name)) throw new ExpressionError(`${val}() is not a supported function`);
      const args = [];
      if (!this.is(this.peek(), "op", ")")) {
        for (;;) {
          args.push(this.expr(0, depth + 1));
          if (this.is(this.peek(), "op", ",")) {
            this.take();
            continue;
          }
          break;
        }
      }
      if (!this.is(this.take(), "op", ")")) throw new ExpressionError(`${val}( is not closed`);
      const [least, most] = FUNCTIONS[name];
      if (args.length < least || (most !== null && args.length > most)) {
        const want = least === most ? String(least) : `${least} to ${most ?? "any"}`;
        throw new ExpressionError(`${val}() takes ${want} arguments, got ${args.length}`);
      }
      return this.node("call", name, args);
    }
    if (kind === "end") throw new ExpressionError("ends where a value was expected");
    throw new ExpressionError(`unexpected '${val}' where a value was expected`);
  }
}

function checkParent(tree, insidePosition = false) {
  const tag = tree[0];
  if (tag === "parent" && !insidePosition) throw new ExpressionError("'..' is only supported as position(..)");
  if (tag === "call") for (const a of tree[2]) checkParent(a, tree[1] === "position");
  else if (tag === "bin") {
    checkParent(tree[2]);
    checkParent(tree[3]);
  } else if (tag === "neg") checkParent(tree[1]);
}

const cache = new Map();

/** Parse `text` (cached); throws ExpressionError with a readable reason. */
export function parse(text) {
  const hit = cache.get(text);
  if (hit) return hit;
  if (text.length > MAX_EXPRESSION) throw new ExpressionError(`is longer than ${MAX_EXPRESSION} characters`);
  if (!/[^ \t\r\n]/.test(text)) throw new ExpressionError("is empty");
  const tree = new Parser(text).parse();
  checkParent(tree);
  if (cache.size > 2000) cache.clear();
  cache.set(text, tree);
  return tree;
}

// -- values and coercions --------------------------------------------------

// XML's whitespace (XPath's), not Unicode's: the same characters as on the gateway.
const NUMBER = /^[ \t\r\n]*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))[ \t\r\n]*$/;
const DATE = /^[ \t\r\n]*([0-9]{4})-([0-9]{2})-([0-9]{2})[ \t\r\n]*$/;
const DATETIME = /^[ \t\r\n]*[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?[ \t\r\n]*$/;
const trimWs = (s) => s.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
const DAY_MS = 86400000;

function dateDays(y, m, d) {
  const ms = Date.UTC(y, m - 1, d);
  const back = new Date(ms);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== m - 1 || back.getUTCDate() !== d) return NaN;
  return ms / DAY_MS;
}

export function toNumber(v) {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return v;
  if (Array.isArray(v)) v = v.length ? v[0] : "";
  let m = NUMBER.exec(v);
  if (m) return Number(m[1]);
  m = DATE.exec(v);
  if (m) return dateDays(Number(m[1]), Number(m[2]), Number(m[3]));
  if (DATETIME.test(v)) {
    let s = trimWs(v);
    if (!/(Z|[+-][0-9]{2}:?[0-9]{2})$/.test(s)) s += "Z"; // no zone: UTC, as on the gateway
    s = s.replace(/([+-][0-9]{2})([0-9]{2})$/, "$1:$2");
    const ms = Date.parse(s);
    return Number.isNaN(ms) ? NaN : Math.trunc(ms) / DAY_MS;
  }
  return NaN;
}

export function numberString(n) {
  return String(n); // the rule outpost/formexpr.py number_string() copies
}

export function toString(v) {
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return numberString(v);
  if (Array.isArray(v)) return v.length ? v[0] : "";
  return v;
}

export function toBool(v) {
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return !(v === 0 || Number.isNaN(v));
  if (Array.isArray(v)) return v.length > 0;
  return v !== "";
}

function compare(op, a, b) {
  if (Array.isArray(a) || Array.isArray(b)) {
    if (typeof a === "boolean" || typeof b === "boolean") return compare(op, toBool(a), toBool(b));
    const left = Array.isArray(a) ? a : [a];
    const right = Array.isArray(b) ? b : [b];
    return left.some((x) => right.some((y) => compare(op, x, y)));
  }
  if (op === "=" || op === "!=") {
    let same;
    if (typeof a === "boolean" || typeof b === "boolean") same = toBool(a) === toBool(b);
    else if (typeof a === "number" || typeof b === "number") same = toNumber(a) === toNumber(b);
    else same = a === b;
    return op === "=" ? same : !same;
  }
  const x = toNumber(a);
  const y = toNumber(b);
  if (op === "<") return x < y;
  if (op === "<=") return x <= y;
  if (op === ">") return x > y;
  return x >= y;
}

function arith(op, x, y) {
  if (op === "+") return x + y;
  if (op === "-") return x - y;
  if (op === "*") return x * y;
  if (op === "div") return x / y;
  return x % y; // mod: the sign of the dividend
}

const codePoints = (s) => [...s];
const splitList = (s) => s.split(/[ \t\r\n]+/).filter(Boolean);

function regexTest(text, pattern) {
  try {
    return new RegExp(pattern).test(text);
  } catch {
    return false;
  }
}

function round(x, places) {
  if (!Number.isFinite(x) || Number.isNaN(places)) return x;
  // 10^p parsed from its decimal ("1e-5"): correctly rounded, as on the gateway
  // (V8's 10 ** -5 is 0.000009999999999999999).
  const p = Math.trunc(places);
  const scale = p === Infinity ? Infinity : p === -Infinity ? 0 : Number(`1e${p}`);
  return Math.floor(x * scale + 0.5) / scale;
}

function substr(s, start, end) {
  const chars = codePoints(s);
  let a = Number.isNaN(start) ? 0 : Math.trunc(start);
  let b = end === undefined || Number.isNaN(end) ? chars.length : Math.trunc(end);
  if (a < 0) a = Math.max(0, chars.length + a);
  if (b < 0) b = Math.max(0, chars.length + b);
  return chars.slice(a, b).join("");
}

function call(name, args, scope) {
  if (name === "if") return toBool(evaluate(args[0], scope)) ? evaluate(args[1], scope) : evaluate(args[2], scope);
  const vals = name === "position" ? [] : args.map((a) => evaluate(a, scope));
  switch (name) {
    case "selected":
      return splitList(toString(vals[0])).includes(trimWs(toString(vals[1])));
    case "count-selected":
      return splitList(toString(vals[0])).length;
    case "concat":
      return vals.map((v) => (Array.isArray(v) ? v.join("") : toString(v))).join("");
    case "string-length":
      return codePoints(vals.length ? toString(vals[0]) : scope.current()).length;
    case "regex":
      return regexTest(toString(vals[0]), toString(vals[1]));
    case "today":
      return scope.today();
    case "sum": {
      const items = Array.isArray(vals[0]) ? vals[0] : [vals[0]];
      let total = 0;
      for (const i of items) total += toNumber(i);
      return total;
    }
    case "count":
      return Array.isArray(vals[0]) ? vals[0].length : 1;
    case "position":
      return scope.position();
    case "number":
      return toNumber(vals.length ? vals[0] : scope.current());
    case "string":
      return vals.length ? toString(vals[0]) : scope.current();
    case "boolean":
      return toBool(vals[0]);
    case "not":
      return !toBool(vals[0]);
    case "true":
      return true;
    case "false":
      return false;
    case "contains":
      return toString(vals[0]).includes(toString(vals[1]));
    case "starts-with":
      return toString(vals[0]).startsWith(toString(vals[1]));
    case "ends-with":
      return toString(vals[0]).endsWith(toString(vals[1]));
    case "substr":
      return substr(toString(vals[0]), toNumber(vals[1]), vals.length > 2 ? toNumber(vals[2]) : undefined);
    case "int": {
      const x = toNumber(vals[0]);
      return Number.isFinite(x) ? Math.trunc(x) : x;
    }
    case "round":
      return round(toNumber(vals[0]), vals.length > 1 ? toNumber(vals[1]) : 0);
    case "coalesce":
      return toString(vals[0]) !== "" ? vals[0] : vals[1];
    default:
      throw new ExpressionError(`${name}() is not a supported function`);
  }
}

/** Evaluate a parsed tree; scope: {value(name), current(), position(), today()}. */
export function evaluate(tree, scope) {
  switch (tree[0]) {
    case "num":
    case "str":
      return tree[1];
    case "ref":
      return scope.value(tree[1]);
    case "self":
      return scope.current();
    case "parent":
      return "";
    case "neg":
      return -toNumber(evaluate(tree[1], scope));
    case "call":
      return call(tree[1], tree[2], scope);
    default: {
      const op = tree[1];
      if (op === "or") return toBool(evaluate(tree[2], scope)) || toBool(evaluate(tree[3], scope));
      if (op === "and") return toBool(evaluate(tree[2], scope)) && toBool(evaluate(tree[3], scope));
      const a = evaluate(tree[2], scope);
      const b = evaluate(tree[3], scope);
      if (op in BINARY && BINARY[op] <= 4) return compare(op, a, b);
      return arith(op, toNumber(a), toNumber(b));
    }
  }
}

/** Parse and evaluate `text` in `scope`. */
export function run(text, scope) {
  return evaluate(parse(text), scope);
}
