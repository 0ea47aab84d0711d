import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { INITIAL_STATUS, reduceStatus, renderStatus, StatusEvent, StatusState } from '../src/status';

const run = (events: StatusEvent[], from: StatusState = INITIAL_STATUS) => events.reduce(reduceStatus, from);

test('starting, loading with progress, then ready', () => {
    let s = run([{ type: 'starting' }, { type: 'running' }]);
    assert.equal(s.kind, 'starting');
    s = reduceStatus(s, { type: 'progress', token: 't1', value: { kind: 'begin', title: 'Loading the model' } });
    assert.equal(s.kind, 'loading');
    assert.equal(renderStatus(s).text, '$(loading~spin) copilot-lsp');
    s = reduceStatus(s, { type: 'progress', token: 't1', value: { kind: 'report', message: 'weights', percentage: 50 } });
    assert.equal(s.kind, 'loading');
    assert.equal(s.detail, 'weights 50%');
    s = reduceStatus(s, { type: 'progress', token: 't1', value: { kind: 'end', message: 'tiny_starcoder_py on cpu' } });
    assert.equal(s.kind, 'ready');
    assert.match(renderStatus(s).tooltip, /ready: tiny_starcoder_py on cpu/);
    assert.equal(renderStatus(s).command, 'copilotLsp.toggle');
});

test('a begin whose message (not title) says loading counts', () => {
    const s = run([
        { type: 'starting' },
        { type: 'progress', token: 'copilot-lsp/load/1', value: { kind: 'begin', title: 'copilot-lsp', message: 'loading /m' } },
    ]);
    assert.equal(s.kind, 'loading');
    assert.equal(s.detail, 'loading /m');
});

test('progress that is not about the model is ignored', () => {
    const s = run([
        { type: 'starting' },
        { type: 'progress', token: 7, value: { kind: 'begin', title: 'Indexing workspace' } },
        { type: 'progress', token: 7, value: { kind: 'end' } },
    ]);
    assert.equal(s.kind, 'starting');
});

test('an error message turns the item red and points at the log', () => {
    const s = run([
        { type: 'starting' },
        { type: 'progress', token: 'a', value: { kind: 'begin', title: 'copilot-lsp: loading model' } },
        { type: 'message', severity: 1, message: 'no such model: /nope' },
        { type: 'progress', token: 'a', value: { kind: 'end' } },
    ]);
    assert.equal(s.kind, 'error');
    assert.equal(s.detail, 'no such model: /nope');
    const view = renderStatus(s);
    assert.equal(view.error, true);
    assert.equal(view.command, 'copilotLsp.showLog');
});

test('a failed end message is an error; a later load recovers', () => {
    let s = run([
        { type: 'starting' },
        { type: 'progress', token: 1, value: { kind: 'begin', title: 'Loading model' } },
        { type: 'progress', token: 1, value: { kind: 'end', message: 'failed: out of memory' } },
    ]);
    assert.equal(s.kind, 'error');
    s = run(
        [
            { type: 'progress', token: 2, value: { kind: 'begin', title: 'Loading model' } },
            { type: 'progress', token: 2, value: { kind: 'end' } },
        ],
        s,
    );
    assert.equal(s.kind, 'ready');
});

test('warnings do not change the state; stop and disable do', () => {
    let s = run([{ type: 'starting' }, { type: 'message', severity: 2, message: 'slow' }]);
    assert.equal(s.kind, 'starting');
    s = reduceStatus(s, { type: 'stopped' });
    assert.equal(s.kind, 'error');
    s = reduceStatus(s, { type: 'disabled' });
    assert.equal(s.kind, 'off');
    assert.equal(reduceStatus(s, { type: 'stopped' }).kind, 'off');
});
