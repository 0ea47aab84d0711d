// Settings: the `copilotLsp.*` configuration as VS Code hands it over, validated and turned
// into what the server reads (`initializationOptions`, and the flat `settings` object of
// `workspace/didChangeConfiguration`). Pure: no `vscode` import, so unit tests run in Node.

/** The extension's settings after validation. `undefined` means "the server's default". */
export interface Settings {
    enable: boolean;
    serverPath: string;
    logFile: string | undefined;
    model: string | undefined;
    device: string | undefined;
    temperature: number | undefined;
    maxTokens: number | undefined;
    debounceMs: number | undefined;
    extraOptions: Record<string, unknown>;
}

/** The server's option keys (camelCase, as `copilot-lsp` parses them). */
export type ServerOptions = Record<string, unknown>;

/** Reads one key below `copilotLsp.` (e.g. `"maxTokens"`); `undefined` when unset. */
export type SettingGetter = (key: string) => unknown;

/** A setting that could not be used, with why; the rest of the settings still apply. */
export interface SettingProblem {
    key: string;
    message: string;
}

export const DEFAULT_SERVER_PATH = 'copilot-lsp';

function str(value: unknown): string | undefined {
    if (typeof value !== 'string') {
        return undefined;
    }
    const trimmed = value.trim();
    return trimmed === '' ? undefined : trimmed;
}

function num(
    key: string,
    value: unknown,
    problems: SettingProblem[],
    check: { min: number; max?: number; integer?: boolean },
): number | undefined {
    if (value === undefined || value === null || value === '') {
        return undefined;
    }
    const n = typeof value === 'string' ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isFinite(n)) {
        problems.push({ key, message: `expected a number, got ${JSON.stringify(value)}` });
        return undefined;
    }
    if (check.integer === true && !Number.isInteger(n)) {
        problems.push({ key, message: `expected a whole number, got ${n}` });
        return undefined;
    }
    if (n < check.min || (check.max !== undefined && n > check.max)) {
        const range = check.max === undefined ? `at least ${check.min}` : `between ${check.min} and ${check.max}`;
        problems.push({ key, message: `expected a number ${range}, got ${n}` });
        return undefined;
    }
    return n;
}

/** Validates the raw settings. Bad values are dropped (the server's default applies) and reported. */
export function readSettings(get: SettingGetter): { settings: Settings; problems: SettingProblem[] } {
    const problems: SettingProblem[] = [];
    const extra = get('extraOptions');
    let extraOptions: Record<string, unknown> = {};
    if (extra !== undefined && extra !== null) {
        if (typeof extra === 'object' && !Array.isArray(extra)) {
            extraOptions = { ...(extra as Record<string, unknown>) };
        } else {
            problems.push({ key: 'extraOptions', message: 'expected an object' });
        }
    }
    const settings: Settings = {
        enable: get('enable') !== false,
        serverPath: str(get('serverPath')) ?? DEFAULT_SERVER_PATH,
        logFile: str(get('logFile')),
        model: str(get('model')),
        device: str(get('device')),
        temperature: num('temperature', get('temperature'), problems, { min: 0, max: 2 }),
        maxTokens: num('maxTokens', get('maxTokens'), problems, { min: 1, max: 4096, integer: true }),
        debounceMs: num('debounceMs', get('debounceMs'), problems, { min: 0, max: 10000, integer: true }),
        extraOptions,
    };
    return { settings, problems };
}

/**
 * The object sent as `initializationOptions`, and as `settings` in
 * `workspace/didChangeConfiguration` (flat, not nested under a section name).
 *
 * VS Code shows inline completions, so the `textDocument/completion` fallback is off unless
 * `extraOptions` turns it on. Named settings win over the same key in `extraOptions`.
 */
export function toServerOptions(s: Settings): ServerOptions {
    const named: ServerOptions = {
        model: s.model,
        device: s.device,
        temperature: s.temperature,
        maxTokens: s.maxTokens,
        debounceMs: s.debounceMs,
    };
    const out: ServerOptions = { completionFallback: false, ...s.extraOptions };
    for (const [key, value] of Object.entries(named)) {
        if (value !== undefined) {
            out[key] = value;
        }
    }
    return out;
}

/** The command line; the language client appends `--stdio` itself (TransportKind.stdio). */
export function serverCommand(s: Settings): { command: string; args: string[] } {
    const args: string[] = [];
    if (s.logFile !== undefined) {
        args.push('--log-file', s.logFile);
    }
    return { command: s.serverPath, args };
}

/** What a settings change asks of the running client. */
export type SettingsChange = 'none' | 'start' | 'stop' | 'restart' | 'notify';

export function classifyChange(prev: Settings | undefined, next: Settings, running: boolean): SettingsChange {
    if (!next.enable) {
        return running ? 'stop' : 'none';
    }
    if (!running || prev === undefined || !prev.enable) {
        return 'start';
    }
    const a = serverCommand(prev);
    const b = serverCommand(next);
    if (a.command !== b.command || JSON.stringify(a.args) !== JSON.stringify(b.args)) {
        return 'restart';
    }
    return JSON.stringify(toServerOptions(prev)) === JSON.stringify(toServerOptions(next)) ? 'none' : 'notify';
}
