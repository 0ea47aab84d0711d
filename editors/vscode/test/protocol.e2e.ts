// End to end: the real `copilot-lsp` binary, driven the way vscode-languageclient drives it
// (same capabilities, `--stdio` appended, the extension's own initializationOptions and
// didChangeConfiguration payloads), must produce an inline completion; the show and
// partial-accept notifications VS Code's inline-completion provider sends (its
// handleDidShowCompletionItem / handleDidPartiallyAcceptCompletionItem) and the item's
// command reach the server's event log.
//
// Run: COPILOT_LSP_BIN=... COPILOT_LSP_TEST_MODEL=... node out/test/protocol.e2e.js

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import {
    CancellationTokenSource,
    DidChangeConfigurationNotification,
    DidChangeTextDocumentNotification,
    DidOpenTextDocumentNotification,
    InitializeRequest,
    InitializeResult,
    InlineCompletionItem,
    InlineCompletionList,
    InlineCompletionRequest,
    InlineCompletionTriggerKind,
    ResponseError,
} from 'vscode-languageserver-protocol/node';

import { readSettings, toServerOptions } from '../src/settings';
import { runChecks, Server, testEnv, utf16Length } from './lsp-client';

const NAME = 'vscode protocol e2e';
const env = testEnv(NAME);

// What a user would put in settings.json, run through the extension's own code.
const raw: Record<string, unknown> = {
    model: env.model,
    temperature: 0,
    maxTokens: 24,
    debounceMs: 0,
    extraOptions: { postprocess: env.postprocess },
};
const { settings } = readSettings((k) => raw[k]);
const options = toServerOptions(settings);

// Multibyte text before the cursor: accents (2 UTF-8 bytes, 1 UTF-16 unit), an emoji
// (4 bytes, 2 units), an em dash (3 bytes, 1 unit).
const LINES = [
    '# Grüße — 🐍 snake café',
    'def greet(name: str) -> str:',
    '    """Say hello to ñame 🐍."""',
    '    message = "héllo, " + name',
    '    return message',
    '',
    '',
    'def add(a, b):',
    '    ',
];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'copilot-lsp-vscode-'));
const file = path.join(dir, 'sample.py');
fs.writeFileSync(file, LINES.join('\n'));
const uri = pathToFileURL(file).toString();
let version = 1;
// The server's event log goes to a folder of the test's own (the server inherits the env).
const dataHome = fs.mkdtempSync(path.join(os.tmpdir(), 'copilot-lsp-vscode-data-'));
process.env.XDG_DATA_HOME = dataHome;
let answered: InlineCompletionItem | undefined;

/** The event log's lines, once the server has written what it was sent. */
async function events(): Promise<Record<string, unknown>[]> {
    const r = (await c.sendRequest('copilot/debugEvents')) as { flushed?: boolean };
    if (r.flushed !== true) {
        throw new Error(`copilot/debugEvents: ${JSON.stringify(r)}`);
    }
    const folder = path.join(dataHome, 'copilot-lsp', 'events');
    const lines: Record<string, unknown>[] = [];
    for (const f of fs.existsSync(folder) ? fs.readdirSync(folder) : []) {
        for (const l of fs.readFileSync(path.join(folder, f), 'utf8').split('\n')) {
            if (l.trim() !== '') {
                lines.push(JSON.parse(l) as Record<string, unknown>);
            }
        }
    }
    return lines;
}

const server = Server.spawn(env.bin);
const c = server.connection;
let init: InitializeResult | undefined;
const dynamic: string[] = [];
c.onRequest('client/registerCapability', (p: { registrations: { method: string }[] }) => {
    dynamic.push(...p.registrations.map((r) => r.method));
    return null;
});

function items(result: InlineCompletionList | InlineCompletionItem[] | null): InlineCompletionItem[] {
    if (result === null) {
        return [];
    }
    return Array.isArray(result) ? result : result.items;
}

function text(item: InlineCompletionItem): string {
    return typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
}

async function completeUntilNonEmpty(line: number, character: number, timeoutMs: number): Promise<InlineCompletionItem> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
        const result = await c.sendRequest(InlineCompletionRequest.type, {
            textDocument: { uri },
            position: { line, character },
            context: { triggerKind: InlineCompletionTriggerKind.Invoked },
        });
        last = result;
        const nonEmpty = items(result).filter((i) => text(i).length > 0);
        if (nonEmpty.length > 0) {
            return nonEmpty[0];
        }
        await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no non-empty inline completion at ${line}:${character} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

function checkRange(item: InlineCompletionItem, line: number, character: number, lineText: string): void {
    if (item.range === undefined) {
        return;
    }
    const { start, end } = item.range;
    if (start.line !== end.line) {
        throw new Error(`range spans lines: ${JSON.stringify(item.range)}`);
    }
    if (start.line !== line || start.character > character || end.character < character) {
        throw new Error(`range ${JSON.stringify(item.range)} does not contain the cursor ${line}:${character}`);
    }
    const typed = lineText.slice(start.character, character);
    if (!text(item).startsWith(typed)) {
        throw new Error(`insertText ${JSON.stringify(text(item))} does not start with the replaced ${JSON.stringify(typed)}`);
    }
}

void runChecks(NAME, server, [
    [
        'initialize with VS Code capabilities and the extension initializationOptions',
        async () => {
            init = await c.sendRequest(InitializeRequest.type, {
                processId: process.pid,
                clientInfo: { name: 'Visual Studio Code', version: '1.91.0' },
                rootUri: pathToFileURL(dir).toString(),
                workspaceFolders: [{ uri: pathToFileURL(dir).toString(), name: 'e2e' }],
                initializationOptions: options,
                capabilities: {
                    general: { positionEncodings: ['utf-16'] },
                    window: { workDoneProgress: true, showMessage: {} },
                    workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: true } },
                    textDocument: {
                        synchronization: { dynamicRegistration: true, didSave: true },
                        inlineCompletion: { dynamicRegistration: true },
                        completion: { completionItem: { snippetSupport: true }, contextSupport: true },
                    },
                },
            });
            const caps = init.capabilities;
            const enc = caps.positionEncoding;
            if (enc !== undefined && enc !== 'utf-16') {
                throw new Error(`server chose position encoding ${enc}; VS Code offered only utf-16`);
            }
            console.log(`       server: ${JSON.stringify(init.serverInfo ?? {})}; initializationOptions: ${JSON.stringify(options)}`);
        },
    ],
    [
        'initialized, then didChangeConfiguration with the flat settings object',
        async () => {
            await c.sendNotification('initialized', {});
            await c.sendNotification(DidChangeConfigurationNotification.type, { settings: options });
        },
    ],
    [
        'inlineCompletionProvider advertised (statically or registered)',
        async () => {
            await new Promise((r) => setTimeout(r, 200));
            if (!init!.capabilities.inlineCompletionProvider && !dynamic.includes('textDocument/inlineCompletion')) {
                throw new Error(`no inlineCompletionProvider in ${JSON.stringify(init!.capabilities)}`);
            }
        },
    ],
    [
        'model loading reported with $/progress (begin ... end)',
        async () => {
            await server.waitFor('a model-loading progress to end', () => server.modelLoaded(), 120000);
            const begin = server.progress.find((p) => p.value.kind === 'begin');
            console.log(`       progress: ${server.progress.map((p) => p.value.kind).join(',')}; title: ${JSON.stringify(begin && 'title' in begin.value ? begin.value.title : undefined)}`);
            const errors = server.messages.filter((m) => m.type === 1);
            if (errors.length > 0) {
                throw new Error(`window/showMessage errors: ${JSON.stringify(errors)}`);
            }
        },
    ],
    [
        'inline completion on an empty indented line (multibyte text above)',
        async () => {
            await c.sendNotification(DidOpenTextDocumentNotification.type, {
                textDocument: { uri, languageId: 'python', version, text: LINES.join('\n') },
            });
            const item = await completeUntilNonEmpty(8, 4, 60000);
            checkRange(item, 8, 4, LINES[8]);
            console.log(`       answer: ${JSON.stringify(item)}`);
        },
    ],
    [
        'incremental didChange, then a completion after the typed text',
        async () => {
            version += 1;
            await c.sendNotification(DidChangeTextDocumentNotification.type, {
                textDocument: { uri, version },
                contentChanges: [{ range: { start: { line: 8, character: 4 }, end: { line: 8, character: 4 } }, text: 'return a' }],
            });
            LINES[8] = '    return a';
            const item = await completeUntilNonEmpty(8, 12, 60000);
            checkRange(item, 8, 12, LINES[8]);
            console.log(`       answer: ${JSON.stringify(item)}`);
            answered = item;
        },
    ],
    [
        'didShowCompletion, didPartiallyAcceptCompletion and the item command reach the event log',
        async () => {
            const item = answered!;
            const command = item.command;
            if (command?.command !== 'copilot-lsp.accepted' || typeof command.arguments?.[0] !== 'string') {
                throw new Error(`no copilot-lsp.accepted command with an id: ${JSON.stringify(item)}`);
            }
            await c.sendNotification('textDocument/didShowCompletion', { item });
            await c.sendNotification('textDocument/didPartiallyAcceptCompletion', { item, acceptedLength: 1 });
            // Logged under the suggestion's id: this item's, or an earlier one's that it
            // continues (the completion cache typing through).
            const kind = (e: Record<string, unknown>) => `${String(e.event)}${e.how ? `:${String(e.how)}` : ''}`;
            const kinds = (await events()).map(kind);
            if (!kinds.includes('shown') || !kinds.includes('accepted:partial')) {
                throw new Error(`events: ${JSON.stringify(kinds)}`);
            }
            await c.sendRequest('workspace/executeCommand', { command: command.command, arguments: command.arguments });
            const all = (await events()).filter((e) => e.how === 'command');
            if (all.length !== 1 || all[0].complete !== true) {
                throw new Error(`the command's accept: ${JSON.stringify(all)}`);
            }
            console.log(`       events: ${kinds.join(', ')}, accepted:command`);
        },
    ],
    [
        'completion after an emoji (UTF-16 surrogate pair) on the cursor line',
        async () => {
            version += 1;
            const at = { line: 0, character: utf16Length(LINES[0]) };
            await c.sendNotification(DidChangeTextDocumentNotification.type, {
                textDocument: { uri, version },
                contentChanges: [{ range: { start: at, end: at }, text: ' 🐍 ' }],
            });
            LINES[0] += ' 🐍 ';
            const character = utf16Length(LINES[0]);
            const result = await c.sendRequest(InlineCompletionRequest.type, {
                textDocument: { uri },
                position: { line: 0, character },
                context: { triggerKind: InlineCompletionTriggerKind.Automatic },
            });
            for (const item of items(result)) {
                checkRange(item, 0, character, LINES[0]);
            }
        },
    ],
    [
        'a cancelled request settles (RequestCancelled or a result), the next one still works',
        async () => {
            const source = new CancellationTokenSource();
            const pending = c.sendRequest(
                InlineCompletionRequest.type,
                { textDocument: { uri }, position: { line: 8, character: 12 }, context: { triggerKind: 2 } },
                source.token,
            );
            source.cancel();
            const settled = await Promise.race([
                pending.then(
                    () => 'result',
                    (e: unknown) => (e instanceof ResponseError ? `error ${e.code}` : `error ${String(e)}`),
                ),
                new Promise<string>((r) => setTimeout(() => r('timeout'), 30000)),
            ]);
            if (settled === 'timeout' || (settled.startsWith('error') && settled !== 'error -32800')) {
                throw new Error(`cancelled request: ${settled}`);
            }
            console.log(`       cancelled request settled with: ${settled}`);
            await completeUntilNonEmpty(8, 12, 30000);
        },
    ],
    [
        'shutdown and exit with code 0',
        async () => {
            const code = await server.shutdown();
            if (code !== 0) {
                throw new Error(`exit code ${code}`);
            }
        },
    ],
]);
