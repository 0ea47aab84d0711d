// End to end as Helix: replays Helix's initialize capabilities (editors/helix/
// client-capabilities.json: no inline completion, utf-8 offered first) and the `config` of
// editors/helix/languages.toml against the real binary, then completes through
// `textDocument/completion` the way Helix does: positions in the negotiated encoding and
// several requests without `$/cancelRequest` (Helix never sends it).
//
// Run: COPILOT_LSP_BIN=... COPILOT_LSP_TEST_MODEL=... COPILOT_LSP_HELIX_CONFIG='{...}' \
//   node out/test/helix.e2e.js

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import {
    CompletionItem,
    CompletionList,
    CompletionRequest,
    CompletionTriggerKind,
    DidChangeConfigurationNotification,
    DidChangeTextDocumentNotification,
    DidOpenTextDocumentNotification,
    InitializeRequest,
    InitializeResult,
    TextDocumentSyncKind,
} from 'vscode-languageserver-protocol/node';

import { runChecks, Server, testEnv, utf8Length } from './lsp-client';

const NAME = 'helix replay e2e';
const env = testEnv(NAME);
const helixDir = path.resolve(__dirname, '..', '..', '..', 'helix');
const capabilities = JSON.parse(fs.readFileSync(path.join(helixDir, 'client-capabilities.json'), 'utf8'));
const helixConfig = JSON.parse(process.env.COPILOT_LSP_HELIX_CONFIG ?? '{"completionFallback": true}');
// The shipped config, pointed at the test model and made deterministic.
const config = { ...helixConfig, model: env.model, temperature: 0, maxTokens: 24, postprocess: env.postprocess };

const LINES = ['# Grüße — 🐍 snake café', 'def shout(name):', '    loud = "¡hé 🐍 " + '];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'copilot-lsp-helix-'));
const file = path.join(dir, 'sample.py');
fs.writeFileSync(file, LINES.join('\n'));
const uri = pathToFileURL(file).toString();

const server = Server.spawn(env.bin);
const c = server.connection;
let init: InitializeResult | undefined;
let encoding = 'utf-16';

/** `character` of the end of `line` in the negotiated encoding. */
function endOf(line: string): number {
    if (encoding === 'utf-8') {
        return utf8Length(line);
    }
    if (encoding === 'utf-32') {
        return [...line].length;
    }
    return line.length;
}

function items(result: CompletionList | CompletionItem[] | null): CompletionItem[] {
    if (result === null) {
        return [];
    }
    return Array.isArray(result) ? result : result.items;
}

function itemText(item: CompletionItem): string {
    const edit = item.textEdit;
    if (edit !== undefined) {
        return edit.newText;
    }
    return item.insertText ?? item.label;
}

async function complete(line: number, character: number): Promise<CompletionItem[]> {
    return items(
        await c.sendRequest(CompletionRequest.type, {
            textDocument: { uri },
            position: { line, character },
            context: { triggerKind: CompletionTriggerKind.Invoked },
        }),
    );
}

void runChecks(NAME, server, [
    [
        "initialize with Helix's capabilities and languages.toml config",
        async () => {
            init = await c.sendRequest(InitializeRequest.type, {
                processId: process.pid,
                clientInfo: { name: 'helix', version: '25.07.1' },
                rootPath: dir,
                rootUri: pathToFileURL(dir).toString(),
                workspaceFolders: [{ uri: pathToFileURL(dir).toString(), name: path.basename(dir) }],
                initializationOptions: config,
                capabilities,
            });
            encoding = init.capabilities.positionEncoding ?? 'utf-16';
            console.log(`       negotiated position encoding: ${encoding}`);
            if (!(capabilities.general.positionEncodings as string[]).includes(encoding)) {
                throw new Error(`server chose ${encoding}, which Helix did not offer`);
            }
            if (encoding !== 'utf-8') {
                throw new Error(`server chose ${encoding}; Helix offers utf-8 first and the server supports it`);
            }
            if (!init.capabilities.completionProvider) {
                throw new Error('no completionProvider: Helix would show nothing');
            }
        },
    ],
    [
        'initialized; Helix then sends its config through didChangeConfiguration',
        async () => {
            await c.sendNotification('initialized', {});
            await c.sendNotification(DidChangeConfigurationNotification.type, { settings: config });
            await server.waitFor('a model-loading progress to end', () => server.modelLoaded(), 120000);
        },
    ],
    [
        'completion after multibyte text, positions in utf-8 bytes',
        async () => {
            await c.sendNotification(DidOpenTextDocumentNotification.type, {
                textDocument: { uri, languageId: 'python', version: 0, text: LINES.join('\n') },
            });
            const deadline = Date.now() + 60000;
            let got: CompletionItem[] = [];
            while (got.length === 0 && Date.now() < deadline) {
                got = (await complete(2, endOf(LINES[2]))).filter((i) => itemText(i).length > 0);
                if (got.length === 0) {
                    await new Promise((r) => setTimeout(r, 250));
                }
            }
            if (got.length === 0) {
                throw new Error('no completion items within 60 s');
            }
            console.log(`       first item: ${JSON.stringify(got[0])}`);
            for (const item of got) {
                const edit = item.textEdit;
                if (edit !== undefined && 'range' in edit) {
                    const { start, end } = edit.range;
                    if (start.line !== 2 || end.line !== 2 || end.character > endOf(LINES[2])) {
                        throw new Error(`textEdit range ${JSON.stringify(edit.range)} is off the cursor line or past its end (utf-8)`);
                    }
                }
            }
        },
    ],
    [
        'typing then three requests without $/cancelRequest: all answered',
        async () => {
            const sync = init!.capabilities.textDocumentSync;
            const kind = typeof sync === 'number' ? sync : sync?.change ?? TextDocumentSyncKind.None;
            let version = 0;
            for (const ch of ['n', 'a', 'm']) {
                version += 1;
                const at = { line: 2, character: endOf(LINES[2]) };
                LINES[2] += ch;
                await c.sendNotification(DidChangeTextDocumentNotification.type, {
                    textDocument: { uri, version },
                    contentChanges:
                        kind === TextDocumentSyncKind.Full
                            ? [{ text: LINES.join('\n') }]
                            : [{ range: { start: at, end: at }, text: ch }],
                });
            }
            const started = Date.now();
            const answers = await Promise.race([
                Promise.all([complete(2, endOf(LINES[2]) - 2), complete(2, endOf(LINES[2]) - 1), complete(2, endOf(LINES[2]))]),
                new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60000)),
            ]);
            if (answers === 'timeout') {
                throw new Error('not every request was answered within 60 s');
            }
            console.log(`       answered in ${Date.now() - started} ms with ${answers.map((a) => a.length).join('/')} items`);
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
