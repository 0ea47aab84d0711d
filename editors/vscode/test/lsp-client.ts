// A minimal editor for end-to-end tests: spawns the real `copilot-lsp` binary and speaks LSP
// to it with vscode-languageserver-protocol (the library vscode-languageclient is built on).

import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
    createProtocolConnection,
    ProtocolConnection,
    ShowMessageNotification,
    StreamMessageReader,
    StreamMessageWriter,
    WorkDoneProgress,
    WorkDoneProgressBegin,
    WorkDoneProgressCreateRequest,
    WorkDoneProgressEnd,
    WorkDoneProgressReport,
} from 'vscode-languageserver-protocol/node';

/** Exit code that `.ci/editors.sh` reads as "skipped" (automake's convention). */
export const SKIP = 77;

export interface TestEnv {
    bin: string;
    model: string;
    postprocess: boolean;
}

/** The binary and model from the environment `.ci/editors.sh` sets; exits with SKIP if absent. */
export function testEnv(name: string): TestEnv {
    const bin = process.env.COPILOT_LSP_BIN;
    const model = process.env.COPILOT_LSP_TEST_MODEL;
    const missing = !bin ? 'COPILOT_LSP_BIN is not set' : !model ? 'COPILOT_LSP_TEST_MODEL is not set' : undefined;
    if (missing !== undefined) {
        console.log(`SKIP ${name}: ${missing} (run through .ci/editors.sh)`);
        process.exit(SKIP);
    }
    if (!fs.existsSync(bin!)) {
        console.log(`FAIL ${name}: COPILOT_LSP_BIN=${bin} does not exist`);
        process.exit(1);
    }
    return { bin: bin!, model: model!, postprocess: process.env.COPILOT_LSP_TEST_POSTPROCESS === 'true' };
}

export type ProgressEvent = {
    token: string | number;
    value: WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;
};

export class Server {
    readonly connection: ProtocolConnection;
    readonly progress: ProgressEvent[] = [];
    readonly messages: { type: number; message: string }[] = [];
    readonly logFile: string;
    private exitCode: number | null | undefined;
    private readonly exited: Promise<number | null>;

    private constructor(readonly proc: ChildProcess, logFile: string) {
        this.logFile = logFile;
        this.connection = createProtocolConnection(
            new StreamMessageReader(proc.stdout!),
            new StreamMessageWriter(proc.stdin!),
        );
        this.exited = new Promise((resolve) => {
            proc.on('exit', (code) => {
                this.exitCode = code;
                resolve(code);
            });
        });
        this.connection.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
            this.connection.onProgress(WorkDoneProgress.type, params.token, (value) => {
                this.progress.push({ token: params.token, value });
            });
        });
        this.connection.onNotification(ShowMessageNotification.type, (m) => {
            this.messages.push(m);
        });
        this.connection.onRequest('workspace/configuration', (params: { items: unknown[] }) =>
            params.items.map(() => null),
        );
        this.connection.onRequest('client/registerCapability', () => null);
        this.connection.listen();
    }

    /** Spawns `bin --stdio` (as vscode-languageclient does with TransportKind.stdio). */
    static spawn(bin: string, extraArgs: string[] = []): Server {
        const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'copilot-lsp-e2e-')), 'server.log');
        const proc = spawn(bin, [...extraArgs, '--log-file', logFile, '--stdio'], {
            stdio: ['pipe', 'pipe', 'inherit'],
            env: { ...process.env, RAYON_NUM_THREADS: process.env.RAYON_NUM_THREADS ?? '2' },
        });
        return new Server(proc, logFile);
    }

    /** Whether a model-loading progress has begun and ended. */
    modelLoaded(): boolean {
        const begun = new Set(
            this.progress
                .filter((p) => {
                    if (p.value.kind !== 'begin') {
                        return false;
                    }
                    const v = p.value as WorkDoneProgressBegin;
                    return /model|load/i.test(v.title) || /model|load/i.test(v.message ?? '');
                })
                .map((p) => String(p.token)),
        );
        return this.progress.some((p) => p.value.kind === 'end' && begun.has(String(p.token)));
    }

    async waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
        const deadline = Date.now() + timeoutMs;
        while (!cond()) {
            if (this.exitCode !== undefined) {
                throw new Error(`the server exited (code ${this.exitCode}) while waiting for ${what}`);
            }
            if (Date.now() > deadline) {
                throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
            }
            await new Promise((r) => setTimeout(r, 50));
        }
    }

    /** `shutdown` then `exit`; resolves with the process exit code. */
    async shutdown(timeoutMs = 10000): Promise<number | null> {
        await this.connection.sendRequest('shutdown');
        await this.connection.sendNotification('exit');
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs));
        const code = await Promise.race([this.exited, timer]);
        this.connection.dispose();
        if (code === 'timeout') {
            this.proc.kill('SIGKILL');
            throw new Error(`the server did not exit within ${timeoutMs} ms of exit`);
        }
        return code;
    }

    /** The exit code once the process has exited, else undefined. */
    exitStatus(): number | null | undefined {
        return this.exitCode;
    }

    kill(): void {
        if (this.exitCode === undefined) {
            this.proc.kill('SIGKILL');
        }
        this.connection.dispose();
    }

    /** The tail of the server's log file, for failure reports. */
    logTail(lines = 30): string {
        try {
            return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
        } catch {
            return '(no log file)';
        }
    }
}

/** Runs named checks in order; prints one line each; exits 0 when all pass, 1 otherwise. */
export async function runChecks(
    name: string,
    server: Server,
    checks: [string, () => Promise<void>][],
): Promise<never> {
    let failed = 0;
    for (const [label, check] of checks) {
        const started = Date.now();
        try {
            await check();
            console.log(`  ok   ${label} (${Date.now() - started} ms)`);
        } catch (err) {
            failed += 1;
            console.log(`  FAIL ${label}: ${err instanceof Error ? err.message : String(err)}`);
            break;
        }
    }
    if (failed > 0) {
        await new Promise((r) => setTimeout(r, 300)); // let an exit be noticed
        const exit = server.exitStatus();
        if (exit !== undefined) {
            console.log(`  the server had exited with code ${exit}`);
        }
        console.log(`--- server log tail (${server.logFile}) ---\n${server.logTail()}\n---`);
        server.kill();
    }
    console.log(`${name}: ${failed === 0 ? 'PASS' : 'FAIL'}`);
    process.exit(failed === 0 ? 0 : 1);
}

/** UTF-16 code units of `s`, as LSP counts `character` by default. */
export function utf16Length(s: string): number {
    return s.length;
}

/** UTF-8 bytes of `s` (the `utf-8` position encoding). */
export function utf8Length(s: string): number {
    return Buffer.byteLength(s, 'utf8');
}
