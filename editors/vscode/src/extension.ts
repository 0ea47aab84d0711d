// The VS Code extension: starts `copilot-lsp` through vscode-languageclient, which wires
// `textDocument/inlineCompletion` to VS Code's inline suggestions by itself (10.0.1 and later).
// This file only owns the lifecycle, settings forwarding and the status-bar item.

import * as vscode from 'vscode';
import {
    DidChangeConfigurationNotification,
    LanguageClient,
    LanguageClientOptions,
    ServerOptions,
    ShowMessageNotification,
    State,
    TransportKind,
} from 'vscode-languageclient/node';

import { classifyChange, readSettings, serverCommand, Settings, toServerOptions } from './settings';
import { INITIAL_STATUS, reduceStatus, renderStatus, StatusEvent, StatusState } from './status';

const SECTION = 'copilotLsp';

let client: LanguageClient | undefined;
let current: Settings | undefined;
let status: StatusState = INITIAL_STATUS;
let statusItem: vscode.StatusBarItem;
let log: vscode.LogOutputChannel;

function dispatch(event: StatusEvent): void {
    status = reduceStatus(status, event);
    const view = renderStatus(status);
    statusItem.text = view.text;
    statusItem.tooltip = view.tooltip;
    statusItem.command = view.command;
    statusItem.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    statusItem.show();
}

function loadSettings(): Settings {
    const config = vscode.workspace.getConfiguration(SECTION);
    const { settings, problems } = readSettings((key) => config.get(key));
    for (const p of problems) {
        log.warn(`setting ${SECTION}.${p.key} ignored: ${p.message}`);
        void vscode.window.showWarningMessage(`copilot-lsp: setting ${SECTION}.${p.key} ignored: ${p.message}`);
    }
    return settings;
}

async function startClient(settings: Settings): Promise<void> {
    const { command, args } = serverCommand(settings);
    // TransportKind.stdio: the client appends `--stdio` to `args` itself.
    const serverOptions: ServerOptions = { command, args, transport: TransportKind.stdio };
    const clientOptions: LanguageClientOptions = {
        documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
        initializationOptions: toServerOptions(settings),
        outputChannel: log,
        middleware: {
            handleWorkDoneProgress: (token, params, next) => {
                dispatch({ type: 'progress', token, value: params });
                next(token, params);
            },
        },
    };
    const c = new LanguageClient('copilotLsp', 'copilot-lsp', serverOptions, clientOptions);
    // Replaces the client's own handler (registered before ours): keep showing the message,
    // and turn errors (e.g. the model failed to load) into the status item's error state.
    c.onNotification(ShowMessageNotification.type, (message) => {
        dispatch({ type: 'message', severity: message.type, message: message.message });
        switch (message.type) {
            case 1:
                void vscode.window.showErrorMessage(`copilot-lsp: ${message.message}`, 'Show log').then((choice) => {
                    if (choice !== undefined) {
                        log.show();
                    }
                });
                break;
            case 2:
                void vscode.window.showWarningMessage(`copilot-lsp: ${message.message}`);
                break;
            default:
                void vscode.window.showInformationMessage(`copilot-lsp: ${message.message}`);
        }
    });
    c.onDidChangeState((e) => {
        if (e.newState === State.Running) {
            dispatch({ type: 'running' });
        } else if (e.newState === State.Stopped && client === c) {
            dispatch({ type: 'stopped' });
        }
    });
    client = c;
    dispatch({ type: 'starting' });
    try {
        await c.start();
    } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        log.error(`could not start ${command}: ${reason}`);
        dispatch({ type: 'stopped', reason: `could not start ${command}: ${reason}` });
    }
}

async function stopClient(): Promise<void> {
    const c = client;
    client = undefined;
    if (c !== undefined) {
        try {
            await c.stop();
        } catch (err) {
            log.warn(`stopping the server: ${String(err)}`);
        }
    }
}

async function applySettings(): Promise<void> {
    const next = loadSettings();
    const change = classifyChange(current, next, client !== undefined);
    current = next;
    switch (change) {
        case 'stop':
            await stopClient();
            dispatch({ type: 'disabled' });
            break;
        case 'start':
            await stopClient();
            await startClient(next);
            break;
        case 'restart':
            await stopClient();
            await startClient(next);
            break;
        case 'notify':
            await client?.sendNotification(DidChangeConfigurationNotification.type, {
                settings: toServerOptions(next),
            });
            break;
        case 'none':
            if (!next.enable) {
                dispatch({ type: 'disabled' });
            }
            break;
    }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
    log = vscode.window.createOutputChannel('copilot-lsp', { log: true });
    statusItem = vscode.window.createStatusBarItem('copilotLsp.status', vscode.StatusBarAlignment.Right, 100);
    statusItem.name = 'copilot-lsp';
    context.subscriptions.push(
        log,
        statusItem,
        vscode.commands.registerCommand('copilotLsp.toggle', async () => {
            const config = vscode.workspace.getConfiguration(SECTION);
            await config.update('enable', !(current?.enable ?? true), vscode.ConfigurationTarget.Global);
        }),
        vscode.commands.registerCommand('copilotLsp.restart', async () => {
            await stopClient();
            current = undefined;
            await applySettings();
        }),
        vscode.commands.registerCommand('copilotLsp.showLog', () => log.show()),
        vscode.workspace.onDidChangeConfiguration(async (e) => {
            if (e.affectsConfiguration(SECTION)) {
                await applySettings();
            }
        }),
    );
    await applySettings();
}

export async function deactivate(): Promise<void> {
    await stopClient();
}
