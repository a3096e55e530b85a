/* promptlab report: the output grid, its filters and pages, the details panel and the token view.
   Reads the cells from the JSON in #promptlab-data and builds every node with textContent: no
   text from a run is ever parsed as HTML. */
(function () {
  'use strict';
  var source = document.getElementById('promptlab-data');
  if (!source) return;
  var DATA = JSON.parse(source.textContent);
  var V = DATA.variants, T = DATA.tests, POOL = DATA.pool;
  var state = { view: 'all', q: '', page: 0, size: DATA.pageSize || 50, tokens: false, sel: null };
  var $ = function (id) { return document.getElementById(id); };
  var grid = $('grid'), thead = grid.tHead, tbody = grid.tBodies[0], drawer = $('details');
  var haystacks = null;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function str(v) {
    if (v === null || v === undefined) return '';
    return typeof v === 'string' ? v : JSON.stringify(v);
  }
  function pct(x, d) { return (x * 100).toFixed(d || 0) + '%'; }
  function num(x) { return typeof x === 'number' && isFinite(x); }
  function pool(i) { return i === null || i === undefined ? null : POOL[i]; }

  /* --- cells -------------------------------------------------------------------------------- */

  function summarize(reps) {
    // Repeats with no checks ('unchecked') are neither passes nor failures.
    var passed = 0, errors = 0, unchecked = 0;
    reps.forEach(function (r) {
      if (r.s === 'pass') passed++; else if (r.s === 'error') errors++;
      else if (r.s === 'unchecked') unchecked++;
    });
    var checked = reps.length - unchecked;
    var status = checked === 0 ? 'unchecked' : passed === checked ? 'pass' :
      passed > 0 ? 'mixed' : errors === checked ? 'error' : 'fail';
    // The repeat a cell shows: the first that did not pass, so a flaky cell shows its failure.
    var shown = reps.filter(function (r) { return r.s !== 'pass' && r.s !== 'unchecked'; })[0] ||
      reps[0];
    return { passed: passed, checked: checked, status: status, shown: shown };
  }
  function label(status) { return status === 'unchecked' ? 'NO CHECKS' : status.toUpperCase(); }

  function meta(r) {
    var parts = [];
    if (num(r.lat)) parts.push(Math.round(r.lat) + ' ms');
    if (num(r.ct)) parts.push(r.ct + ' tok');
    if (num(r.sc) && r.c && r.c.length) parts.push('score ' + r.sc.toFixed(2));
    if (r.ca) parts.push('cached');
    return parts.join(' · ');
  }

  function tokColor(p) {
    var a = Math.max(0, Math.min(1, 1 - p)) * 0.6;
    return 'rgba(var(--tok),' + a.toFixed(3) + ')';
  }

  function tokenView(lp, cls) {
    var wrap = el('div', cls);
    wrap.classList.add('tokens');
    lp.tokens.forEach(function (t, i) {
      var p = Math.exp(lp.logprobs[i]);
      var span = el('span', 'tok', t);
      span.style.backgroundColor = tokColor(p);
      var lines = ['p = ' + pct(p, 1) + '  ' + JSON.stringify(t)];
      var top = (lp.top && lp.top[i]) || [];
      if (top.length) lines.push('top alternatives:');
      top.forEach(function (alt) {
        lines.push('  ' + pct(Math.exp(alt[1]), 1).padStart(6) + '  ' + JSON.stringify(alt[0]));
      });
      span.title = lines.join('\n');
      wrap.appendChild(span);
    });
    return wrap;
  }

  function outputNode(r, cls, tokens) {
    if (r.e) return el('div', cls + ' err', r.e);
    if (tokens && r.lp && r.lp.tokens && r.lp.tokens.length) return tokenView(r.lp, cls);
    var out = el('div', cls);
    if (r.o === '' || r.o === null || r.o === undefined) add(out, el('span', 'empty', '(empty output)'));
    else out.textContent = r.o;
    return out;
  }

  function failedChecks(checks, acc) {
    (checks || []).forEach(function (c) {
      if (!c.pass) acc.push(c);
    });
    return acc;
  }

  function cellNode(reps, ti, vi) {
    var td = el('td', 'cell');
    td.dataset.t = ti;
    td.dataset.v = vi;
    if (!reps || !reps.length) {
      td.classList.add('st-none');
      td.textContent = 'not run';
      return td;
    }
    var s = summarize(reps), r = s.shown;
    td.classList.add('st-' + s.status);
    td.tabIndex = 0;
    var badge = reps.length > 1 && s.checked
      ? el('span', 'badge ' + s.status, s.passed + '/' + s.checked + ' passed')
      : el('span', 'badge ' + s.status, label(s.status));
    var top = add(el('div', 'ctop'), badge, el('span', 'cmeta',
      (s.status === 'mixed' ? 'repeat ' + r.r + ' · ' : '') + meta(r)));
    add(td, top, outputNode(r, 'out', state.tokens));
    var failed = failedChecks(r.c, []);
    if (failed.length) {
      var ul = el('ul', 'fails');
      failed.slice(0, 3).forEach(function (c) {
        ul.appendChild(el('li', '', '✗ ' + (c.check || c.type) + ': ' + str(c.reason)));
      });
      if (failed.length > 3) ul.appendChild(el('li', 'more', '+' + (failed.length - 3) + ' more'));
      td.appendChild(ul);
    }
    if (state.sel && state.sel.t === ti && state.sel.v === vi) td.classList.add('sel');
    return td;
  }

  /* --- the grid ------------------------------------------------------------------------------ */

  function buildHead() {
    var tr = el('tr');
    tr.appendChild(el('th', '', 'test'));
    V.forEach(function (v) {
      var th = el('th');
      th.title = v.label;
      if (V.some(function (w) { return w.model !== V[0].model; })) add(th, el('div', 'vmodel', v.model));
      add(th, el('div', 'vname', v.setting ? v.prompt + ' [' + v.setting + ']' : v.prompt));
      if (num(v.rate)) {
        var txt = pct(v.rate) + ' pass';
        if (num(v.lo) && num(v.hi)) txt += ' [' + pct(v.lo) + '–' + pct(v.hi) + ']';
        add(th, el('div', 'vrate', txt));
      }
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    // Columns share the width; past a few variants the grid scrolls sideways instead.
    grid.style.minWidth = (220 + V.length * 300) + 'px';
  }

  function testHeader(t) {
    var th = el('th');
    th.scope = 'row';
    add(th, el('div', 'tname', t.name));
    var keys = Object.keys(t.vars || {});
    if (keys.length) {
      var vars = el('div', 'tvars');
      keys.forEach(function (k) {
        var line = el('div');
        add(line, el('b', '', k), document.createTextNode(': ' + str(t.vars[k])));
        vars.appendChild(line);
      });
      th.appendChild(vars);
    }
    if (t.flaky || t.disagree) {
      var flags = el('div', 'tflags');
      if (t.disagree) flags.appendChild(el('span', 'pill disagree', 'disagreement'));
      if (t.flaky) flags.appendChild(el('span', 'pill flaky', 'flaky'));
      th.appendChild(flags);
    }
    return th;
  }

  function haystack(t) {
    var parts = [t.name, JSON.stringify(t.vars || {})];
    t.cells.forEach(function (reps) {
      (reps || []).forEach(function (r) {
        parts.push(str(r.o), str(r.e));
        (r.c || []).forEach(function (c) { parts.push(str(c.check), str(c.reason)); });
      });
    });
    return parts.join('\n').toLowerCase();
  }

  function visible() {
    var view = state.view, q = state.q.trim().toLowerCase();
    if (q && !haystacks) haystacks = T.map(haystack);
    var out = [];
    T.forEach(function (t, i) {
      if (view !== 'all' && !t[view]) return;
      if (q && haystacks[i].indexOf(q) < 0) return;
      out.push(i);
    });
    return out;
  }

  function render() {
    var rows = visible();
    var pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var start = state.page * state.size, slice = rows.slice(start, start + state.size);
    var frag = document.createDocumentFragment();
    slice.forEach(function (ti) {
      var t = T[ti];
      var tr = el('tr', 'trow');
      tr.dataset.t = ti;
      tr.appendChild(testHeader(t));
      t.cells.forEach(function (reps, vi) { tr.appendChild(cellNode(reps, ti, vi)); });
      frag.appendChild(tr);
    });
    if (!slice.length) {
      var tr = el('tr', 'empty'), td = el('td', '', T.length ? 'No tests match.' : 'No cells ran.');
      td.colSpan = V.length + 1;
      frag.appendChild(add(tr, td));
    }
    tbody.replaceChildren(frag);
    $('page').textContent = 'Page ' + (state.page + 1) + ' of ' + pages;
    $('shown').textContent = rows.length
      ? 'tests ' + (start + 1) + '–' + (start + slice.length) + ' of ' + rows.length +
        (rows.length < T.length ? ' (' + T.length + ' in all)' : '')
      : '0 of ' + T.length + ' tests';
    $('prev').disabled = state.page === 0;
    $('next').disabled = state.page >= pages - 1;
  }

  /* --- details ------------------------------------------------------------------------------- */

  function section(title, body, extra) {
    var sec = el('section', 'dsec');
    var h = add(el('h4', '', title), extra);
    return add(sec, h, body);
  }

  function kvTable(pairs) {
    var table = el('table', 'kv'), tb = el('tbody');
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === '') return;
      tb.appendChild(add(el('tr'), el('th', '', p[0]), el('td', '', str(p[1]))));
    });
    return add(table, tb);
  }

  function probsNode(probs, chosen) {
    var box = el('div', 'probs');
    Object.keys(probs).sort(function (a, b) { return probs[b] - probs[a]; }).forEach(function (k) {
      var p = probs[k], bar = el('div', 'pb'), fill = el('i');
      fill.style.width = (Math.max(0, Math.min(1, p)) * 100).toFixed(1) + '%';
      bar.appendChild(fill);
      var label = el('div', 'pl', JSON.stringify(k));
      if (k === chosen) label.classList.add('pick');
      add(box, label, bar, el('div', 'pv', pct(p, 1)));
    });
    return box;
  }

  function detailsNode(d) {
    var box = el('div', 'cdet');
    var rest = [];
    Object.keys(d).forEach(function (k) {
      var v = d[k];
      if (k === 'probs' && v && typeof v === 'object') box.appendChild(probsNode(v, d.chosen));
      else if (k === 'judge_reason') box.appendChild(el('blockquote', 'judge', str(v)));
      else rest.push([k.replace(/_/g, ' '), typeof v === 'object' && v !== null ? JSON.stringify(v, null, 1) : v]);
    });
    if (rest.length) box.appendChild(kvTable(rest));
    return box;
  }

  function checksNode(checks) {
    var ul = el('ul', 'checks');
    checks.forEach(function (c) {
      var li = el('li', c.pass ? 'ok' : 'bad');
      var line = el('div', 'cline');
      add(line, el('span', 'cmark', c.pass ? '✓' : '✗'), el('span', 'cname', c.check || c.type));
      var extras = [];
      if (num(c.score)) extras.push('score ' + c.score.toFixed(3));
      if (c.weight !== undefined && c.weight !== 1) extras.push('weight ' + c.weight);
      if (c.metric) extras.push('metric ' + c.metric);
      if (extras.length) line.insertBefore(el('span', 'cscore', extras.join(' · ')), line.firstChild);
      add(li, line, el('div', 'creason', str(c.reason)));
      if (c.details && typeof c.details === 'object' && Object.keys(c.details).length) li.appendChild(detailsNode(c.details));
      if (c.children && c.children.length) li.appendChild(checksNode(c.children));
      ul.appendChild(li);
    });
    return ul;
  }

  function preNode(text, cls) {
    var pre = el('pre', 'pre' + (cls ? ' ' + cls : ''));
    if (text === '' || text === null || text === undefined) add(pre, el('span', 'empty', '(empty)'));
    else pre.textContent = text;
    return pre;
  }

  function legend() {
    return add(el('div', 'legend'), el('span', '', 'p ≈ 0'), el('span', 'ramp'),
      el('span', '', 'p = 1 · hover a token for its alternatives'));
  }

  function renderRepeat(body, t, v, r) {
    body.replaceChildren();
    var status = add(el('div', 'ctop'), el('span', 'badge ' + r.s, label(r.s)),
      el('span', 'cmeta', ['repeat ' + r.r, 'seed ' + str(r.sd), meta(r)].filter(Boolean).join(' · ')));
    if (r.ca) status.appendChild(el('span', 'pill cached', 'from cache'));
    body.appendChild(add(el('section', 'dsec'), status));

    // Output, as text or as tokens coloured by probability.
    var outBox = el('div');
    var hasTokens = !r.e && r.lp && r.lp.tokens && r.lp.tokens.length;
    var sw = null;
    function showOutput(tokens) {
      outBox.replaceChildren();
      if (tokens) add(outBox, legend(), tokenView(r.lp, 'pre'));
      else outBox.appendChild(r.e ? preNode(r.e, 'err') : preNode(r.o));
      if (sw) {
        sw.children[0].classList.toggle('on', !tokens);
        sw.children[1].classList.toggle('on', !!tokens);
      }
    }
    if (hasTokens) {
      sw = el('span', 'sw');
      var asText = el('button', '', 'text'), asTokens = el('button', '', 'tokens');
      asText.type = asTokens.type = 'button';
      asText.onclick = function () { showOutput(false); };
      asTokens.onclick = function () { showOutput(true); };
      add(sw, asText, asTokens);
    }
    body.appendChild(section(r.e ? 'Error' : 'Output', outBox, sw));
    showOutput(hasTokens);
    if (r.e && r.o) body.appendChild(section('Output', preNode(r.o)));

    if (r.c && r.c.length) {
      var passed = r.c.filter(function (c) { return c.pass; }).length;
      body.appendChild(section('Checks · ' + passed + '/' + r.c.length + ' passed', checksNode(r.c)));
    }

    var messages = pool(r.m);
    if (messages && messages.length && (r.chat || messages.length > 1)) {
      var list = el('div');
      messages.forEach(function (m) {
        list.appendChild(add(el('div', 'msg'), el('div', 'role', m.role), preNode(str(m.content))));
      });
      body.appendChild(section('Chat messages', list));
    }
    body.appendChild(section(r.chat ? 'Rendered prompt (chat template applied)' : 'Rendered prompt',
      preNode(pool(r.p))));

    var vars = Object.keys(t.vars || {}).map(function (k) { return [k, t.vars[k]]; });
    if (vars.length) body.appendChild(section('Vars', kvTable(vars)));

    body.appendChild(section('Run', kvTable([
      ['status', r.s], ['score', num(r.sc) ? r.sc.toFixed(4) : null],
      ['latency', num(r.lat) ? r.lat.toFixed(1) + ' ms' : null],
      ['prompt tokens', r.pt], ['prompt tokens evaluated', r.pe], ['completion tokens', r.ct],
      ['tokens / s', num(r.tps) ? r.tps.toFixed(1) : null], ['finish reason', r.fin],
      ['repeat', r.r], ['seed', r.sd], ['cached', r.ca ? 'yes (from the result cache)' : 'no'],
      ['grammar', r.g], ['model', v.model], ['prompt', v.prompt], ['setting', v.setting],
      ['cell id', r.id]
    ])));
    var params = pool(r.pa);
    if (params) {
      body.appendChild(section('Params', kvTable(Object.keys(params).map(function (k) {
        return [k, params[k]];
      }))));
    }
    if (r.ns) {
      body.appendChild(section('Named scores', kvTable(Object.keys(r.ns).map(function (k) {
        return [k, r.ns[k]];
      }))));
    }
    if (r.md) body.appendChild(section('Metadata', kvTable(Object.keys(r.md).map(function (k) {
      return [k, r.md[k]];
    }))));
  }

  function openDetails(ti, vi, repeatIndex) {
    var t = T[ti], v = V[vi], reps = t.cells[vi];
    if (!reps || !reps.length) return;
    state.sel = { t: ti, v: vi };
    Array.prototype.forEach.call(tbody.querySelectorAll('td.sel'), function (n) { n.classList.remove('sel'); });
    var td = tbody.querySelector('td.cell[data-t="' + ti + '"][data-v="' + vi + '"]');
    if (td) td.classList.add('sel');

    drawer.replaceChildren();
    var head = el('div', 'dhead');
    var close = el('button', 'close', '×');
    close.type = 'button';
    close.title = 'close (Esc)';
    close.setAttribute('aria-label', 'close details');
    close.onclick = closeDetails;
    add(head, close, el('div', 'dtitle', t.name), el('div', 'dsub', v.label));
    var body = el('div', 'dbody');
    var s = summarize(reps);
    var current = repeatIndex !== undefined ? repeatIndex : reps.indexOf(s.shown);
    if (reps.length > 1) {
      head.appendChild(el('div', 'dsub', s.passed + ' of ' + reps.length + ' repeats passed'));
      var tabs = el('div', 'reps');
      reps.forEach(function (r, i) {
        var b = el('button');
        b.type = 'button';
        add(b, el('span', 'm', r.s === 'pass' ? '✓ ' : r.s === 'unchecked' ? '· ' : '✗ '),
          document.createTextNode('repeat ' + r.r + ' · seed ' + str(r.sd)));
        b.onclick = function () {
          Array.prototype.forEach.call(tabs.children, function (x) { x.classList.remove('on'); });
          b.classList.add('on');
          renderRepeat(body, t, v, r);
        };
        if (i === current) b.classList.add('on');
        tabs.appendChild(b);
      });
      head.appendChild(tabs);
    }
    add(drawer, head, body);
    renderRepeat(body, t, v, reps[current]);
    drawer.hidden = false;
    drawer.scrollTop = 0;
  }

  function closeDetails() {
    drawer.hidden = true;
    state.sel = null;
    Array.prototype.forEach.call(tbody.querySelectorAll('td.sel'), function (n) { n.classList.remove('sel'); });
  }

  /* --- wiring -------------------------------------------------------------------------------- */

  function counts() {
    ['all', 'failing', 'disagree', 'flaky'].forEach(function (k) {
      var n = k === 'all' ? T.length : T.filter(function (t) { return t[k]; }).length;
      document.querySelector('[data-count="' + k + '"]').textContent = n;
    });
  }

  buildHead();
  counts();
  if (DATA.logprobs) $('tokens-toggle').hidden = false;
  $('size').value = String(state.size);
  document.querySelectorAll('input[name="view"]').forEach(function (input) {
    input.addEventListener('change', function () {
      state.view = input.value;
      state.page = 0;
      render();
    });
  });
  var timer = null;
  $('search').addEventListener('input', function (ev) {
    clearTimeout(timer);
    timer = setTimeout(function () {
      state.q = ev.target.value;
      state.page = 0;
      render();
    }, 120);
  });
  $('tokens').addEventListener('change', function (ev) { state.tokens = ev.target.checked; render(); });
  $('prev').addEventListener('click', function () { state.page--; render(); });
  $('next').addEventListener('click', function () { state.page++; render(); });
  $('size').addEventListener('change', function (ev) {
    state.size = parseInt(ev.target.value, 10) || 50;
    state.page = 0;
    render();
  });
  tbody.addEventListener('click', function (ev) {
    var td = ev.target.closest('td.cell');
    if (td && !td.classList.contains('st-none')) openDetails(+td.dataset.t, +td.dataset.v);
  });
  tbody.addEventListener('keydown', function (ev) {
    var td = ev.target.closest && ev.target.closest('td.cell');
    if (td && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      openDetails(+td.dataset.t, +td.dataset.v);
    }
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === 'Escape' && !drawer.hidden) closeDetails();
  });
  $('toolbar').hidden = false;
  $('gridwrap').hidden = false;
  render();
})();
