import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { classifyChange, readSettings, serverCommand, toServerOptions } from '../src/settings';

const from = (raw: Record<string, unknown>) => readSettings((key) => raw[key]);

test('unset settings leave the server its defaults', () => {
    const { settings, problems } = from({});
    assert.deepEqual(problems, []);
    assert.equal(settings.enable, true);
    assert.equal(settings.serverPath, 'copilot-lsp');
    assert.deepEqual(toServerOptions(settings), { completionFallback: false });
    assert.deepEqual(serverCommand(settings), { command: 'copilot-lsp', args: [] });
});

test('named settings become camelCase server options', () => {
    const { settings } = from({
        model: ' /models/tiny ',
        device: 'cpu',
        temperature: 0,
        maxTokens: 48,
        debounceMs: 120,
    });
    assert.deepEqual(toServerOptions(settings), {
        completionFallback: false,
        model: '/models/tiny',
        device: 'cpu',
        temperature: 0,
        maxTokens: 48,
        debounceMs: 120,
    });
});

test('extraOptions pass through, named settings win, fallback can be turned on', () => {
    const { settings } = from({
        maxTokens: 32,
        extraOptions: { maxTokens: 999, fimMode: 'spm', completionFallback: true },
    });
    assert.deepEqual(toServerOptions(settings), { completionFallback: true, maxTokens: 32, fimMode: 'spm' });
});

test('invalid values are reported and dropped, never sent', () => {
    const { settings, problems } = from({
        temperature: 7,
        maxTokens: 1.5,
        debounceMs: 'soon',
        extraOptions: [1, 2],
        model: '   ',
    });
    assert.deepEqual(
        problems.map((p) => p.key),
        ['extraOptions', 'temperature', 'maxTokens', 'debounceMs'],
    );
    assert.deepEqual(toServerOptions(settings), { completionFallback: false });
});

test('null (VS Code "unset") and numeric strings', () => {
    const { settings, problems } = from({ temperature: null, maxTokens: '64' });
    assert.deepEqual(problems, []);
    assert.equal(settings.temperature, undefined);
    assert.equal(settings.maxTokens, 64);
});

test('log file becomes --log-file (the client adds --stdio itself)', () => {
    const { settings } = from({ serverPath: '/opt/bin/copilot-lsp', logFile: '/tmp/c.log' });
    assert.deepEqual(serverCommand(settings), { command: '/opt/bin/copilot-lsp', args: ['--log-file', '/tmp/c.log'] });
});

test('classifyChange: what a settings edit asks of the client', () => {
    const base = from({}).settings;
    const disabled = from({ enable: false }).settings;
    const otherPath = from({ serverPath: '/x/copilot-lsp' }).settings;
    const warmer = from({ temperature: 0.5 }).settings;
    assert.equal(classifyChange(undefined, base, false), 'start');
    assert.equal(classifyChange(undefined, disabled, false), 'none');
    assert.equal(classifyChange(base, disabled, true), 'stop');
    assert.equal(classifyChange(disabled, base, false), 'start');
    assert.equal(classifyChange(base, otherPath, true), 'restart');
    assert.equal(classifyChange(base, warmer, true), 'notify');
    assert.equal(classifyChange(base, from({}).settings, true), 'none');
});
