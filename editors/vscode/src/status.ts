// Status: what the status-bar item shows, computed from the client's state, the server's
// `$/progress` (model loading) and its `window/showMessage` errors. Pure: no `vscode` import.

export type StatusKind = 'off' | 'starting' | 'loading' | 'ready' | 'error';

export interface StatusState {
    kind: StatusKind;
    /** Last detail worth showing in the tooltip (progress message, error text). */
    detail: string | undefined;
    /** Progress tokens whose `begin` was about loading the model. */
    loadTokens: string[];
}

export type ProgressValue =
    | { kind: 'begin'; title: string; message?: string; percentage?: number }
    | { kind: 'report'; message?: string; percentage?: number }
    | { kind: 'end'; message?: string };

export type StatusEvent =
    | { type: 'disabled' }
    | { type: 'starting' }
    | { type: 'running' }
    | { type: 'stopped'; reason?: string }
    | { type: 'progress'; token: string | number; value: ProgressValue }
    /** `window/showMessage`; `severity` is LSP's MessageType (1 error, 2 warning, 3 info, 4 log). */
    | { type: 'message'; severity: number; message: string };

export const INITIAL_STATUS: StatusState = { kind: 'off', detail: undefined, loadTokens: [] };

/** Whether a progress `begin` is about loading the model (its title or its message says so). */
export function isModelLoad(value: { title: string; message?: string }): boolean {
    return /model|load/i.test(value.title) || /model|load/i.test(value.message ?? '');
}

/** An `end` message that reports a failure rather than success. */
function isFailure(message: string | undefined): boolean {
    return message !== undefined && /\b(fail(ed|ure)?|error|could not|cannot)\b/i.test(message);
}

function progressDetail(value: { message?: string; percentage?: number }, fallback?: string): string | undefined {
    const parts: string[] = [];
    if (value.message !== undefined && value.message !== '') {
        parts.push(value.message);
    } else if (fallback !== undefined) {
        parts.push(fallback);
    }
    if (value.percentage !== undefined) {
        parts.push(`${Math.round(value.percentage)}%`);
    }
    return parts.length > 0 ? parts.join(' ') : undefined;
}

export function reduceStatus(state: StatusState, event: StatusEvent): StatusState {
    switch (event.type) {
        case 'disabled':
            return { kind: 'off', detail: 'disabled in settings', loadTokens: [] };
        case 'starting':
            return { kind: 'starting', detail: undefined, loadTokens: [] };
        case 'running':
            // The server is up; the model may still be loading (a progress begin follows).
            return state.kind === 'starting' ? { ...state, detail: 'server running' } : state;
        case 'stopped':
            if (state.kind === 'off') {
                return state;
            }
            return { kind: 'error', detail: event.reason ?? 'the server stopped', loadTokens: [] };
        case 'message':
            if (event.severity === 1) {
                return { ...state, kind: 'error', detail: event.message };
            }
            return state;
        case 'progress': {
            const token = String(event.token);
            const value = event.value;
            if (value.kind === 'begin') {
                if (!isModelLoad(value)) {
                    return state;
                }
                return {
                    kind: 'loading',
                    detail: progressDetail(value, value.title),
                    loadTokens: [...state.loadTokens.filter((t) => t !== token), token],
                };
            }
            if (!state.loadTokens.includes(token)) {
                return state;
            }
            if (value.kind === 'report') {
                return { ...state, kind: 'loading', detail: progressDetail(value) ?? state.detail };
            }
            const loadTokens = state.loadTokens.filter((t) => t !== token);
            if (isFailure(value.message)) {
                return { kind: 'error', detail: value.message, loadTokens };
            }
            if (state.kind === 'error') {
                return { ...state, loadTokens };
            }
            return { kind: loadTokens.length > 0 ? 'loading' : 'ready', detail: value.message ?? 'model loaded', loadTokens };
        }
    }
}

export interface StatusView {
    text: string;
    tooltip: string;
    /** Command run on click. */
    command: string;
    error: boolean;
}

const ICONS: Record<StatusKind, string> = {
    off: '$(circle-slash)',
    starting: '$(loading~spin)',
    loading: '$(loading~spin)',
    ready: '$(sparkle)',
    error: '$(error)',
};

const LABELS: Record<StatusKind, string> = {
    off: 'disabled',
    starting: 'starting',
    loading: 'loading the model',
    ready: 'ready',
    error: 'error',
};

export function renderStatus(state: StatusState): StatusView {
    const detail = state.detail !== undefined ? `: ${state.detail}` : '';
    return {
        text: `${ICONS[state.kind]} copilot-lsp`,
        tooltip: `copilot-lsp ${LABELS[state.kind]}${detail}\nClick to ${state.kind === 'error' ? 'show the log' : 'enable or disable'}.`,
        command: state.kind === 'error' ? 'copilotLsp.showLog' : 'copilotLsp.toggle',
        error: state.kind === 'error',
    };
}
