// One error vocabulary for every Berth process. An error is a value with a kind; the kind maps to
// exactly one gRPC status code here and nowhere else, in both directions, so `ctr` sees the same
// class of failure it would see from containerd.

/** gRPC status codes (the numbers are the wire values). */
export const Code = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const names = new Map<number, string>(Object.entries(Code).map(([k, v]) => [v, k]));
export function codeName(code: number): string {
  return names.get(code) ?? `Code(${code})`;
}

// containerd's errdefs suffixes: a wrapped error reads `<context>: <kind text>`, and clients
// (ctr, the Go client) show the message as is. We keep the same wording so messages match.
const kindText: Partial<Record<Code, string>> = {
  [Code.Unknown]: 'unknown',
  [Code.InvalidArgument]: 'invalid argument',
  [Code.NotFound]: 'not found',
  [Code.AlreadyExists]: 'already exists',
  [Code.FailedPrecondition]: 'failed precondition',
  [Code.Unavailable]: 'unavailable',
  [Code.Unimplemented]: 'not implemented',
  [Code.Canceled]: 'context canceled',
  [Code.DeadlineExceeded]: 'context deadline exceeded',
};

export class BerthError extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = `BerthError(${codeName(code)})`;
  }
  /** A copy whose message has `context: ` before it (like Go's fmt.Errorf("...: %w")). */
  wrap(context: string): BerthError {
    return new BerthError(this.code, `${context}: ${this.message}`, { cause: this });
  }
}

/** `kindError(Code.NotFound, 'namespace "x"')` → message `namespace "x": not found`. */
export function kindError(code: Code, context?: string): BerthError {
  const text = kindText[code] ?? codeName(code);
  return new BerthError(code, context ? `${context}: ${text}` : text);
}

export const notFound = (context?: string) => kindError(Code.NotFound, context);
export const alreadyExists = (context?: string) => kindError(Code.AlreadyExists, context);
export const invalidArgument = (context?: string) => kindError(Code.InvalidArgument, context);
export const failedPrecondition = (context?: string) => kindError(Code.FailedPrecondition, context);
export const unavailable = (context?: string) => kindError(Code.Unavailable, context);
export const unimplemented = (context?: string) => kindError(Code.Unimplemented, context);
/** containerd's words for a container without a task: the tasks service's, and the gateway's answer for a task it saw deleted */
export const taskNotFound = (id: string) => new BerthError(Code.NotFound, `task ${id} not found`);

/** Any thrown value as a BerthError; non-Berth errors become Unknown (or Internal for bugs). */
export function toBerthError(err: unknown): BerthError {
  if (err instanceof BerthError) return err;
  if (err instanceof Error) {
    if (err.name === 'AbortError') return new BerthError(Code.Canceled, 'context canceled', { cause: err });
    return new BerthError(Code.Unknown, err.message, { cause: err });
  }
  return new BerthError(Code.Unknown, String(err));
}

export function isCode(err: unknown, code: Code): boolean {
  return err instanceof BerthError && err.code === code;
}

/** Builds the error a status code and message carried over the wire stand for. */
export function fromStatus(code: number, message: string): BerthError {
  return new BerthError((names.has(code) ? code : Code.Unknown) as Code, message);
}
