#!/usr/bin/env python3
"""Numbers for the benchmark (run.sh): latency percentiles, the table, the plot.

  report.py latency COLUMN         latencies (us) in COLUMN of stdin -> p50 p99 n
  report.py window T0 T1           pgbench log on stdin, transactions that ended
                                   between T0 and T1 (epoch seconds; skipN 0:
                                   all but the first N seconds) -> tps p50 p99 n
  report.py report DIR CLIENTS HOT_CLIENTS HOT_KEYS
                                   raw.tsv and extra.tsv of DIR -> results.md,
                                   results.png (gnuplot), table on stdout
  report.py combine DIR CLIENTS HOT_CLIENTS HOT_KEYS
                                   the runs in DIR/pgNN (one per major) and
                                   DIR/compare -> DIR/results.md, results.png
  report.py compare DIR CLIENTS    a comparison run (run.sh --compare) ->
                                   DIR/results.md
"""
import math
import re
import os
import statistics
import subprocess
import sys


def percentile(sorted_values, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return float('nan')
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def cmd_latency(column):
    col = int(column) - 1
    values = sorted(int(line.split()[col]) for line in sys.stdin if line.strip())
    print(f"{percentile(values, 50) / 1000:.3f}\t{percentile(values, 99) / 1000:.3f}\t{len(values)}")


def cmd_window(t0, t1):
    rows = []
    for line in sys.stdin:
        f = line.split()
        if len(f) >= 6:
            rows.append((int(f[4]) + int(f[5]) / 1e6, int(f[2])))
    if not rows:
        print("nan\tnan\tnan\t0")
        return
    first = min(r[0] for r in rows)
    last = max(r[0] for r in rows)
    if t0.startswith('skip'):
        # all but the first seconds, when the connections warm up
        t0, t1 = first + float(t0[4:]), last
    else:
        t0, t1 = float(t0), float(t1)
        # the part of the window that the run covered
        t1 = min(t1, last)
    lat = sorted(l for end, l in rows if t0 <= end <= t1)
    span = t1 - t0
    tps = len(lat) / span if span else float('nan')
    print(f"{tps:.1f}\t{percentile(lat, 50) / 1000:.3f}\t{percentile(lat, 99) / 1000:.3f}\t{len(lat)}")


SCENARIOS = [
    ('new', 'new key: claim + order + complete, one transaction'),
    ('nocomplete', 'new key without idem_complete'),
    ('replay', 'replay of a completed key'),
    ('hot', 'hot keys: {hot_clients} clients, {hot_keys} keys'),
]

VARIANTS = {
    'ext': 'idempotency extension',
    'floor': 'order alone, no idempotency (floor)',
    'hand': 'hand-written SQL',
    'plpgsql': 'PL/pgSQL claim function',
    'pk': 'prepared primary-key SELECT',
    'redis': 'Redis SET NX EX (not transactional)',
    'bare': 'same statements, no key kept (ceiling)',
}

VARIANT_ORDER = ['ext', 'hand', 'plpgsql', 'pk', 'redis', 'bare', 'floor']


def variant_label(scenario, variant):
    if scenario == 'nocomplete' and variant == 'hand':
        return 'hand-written SQL, no response kept'
    if scenario == 'nocomplete' and variant == 'redis':
        return 'Redis SET NX EX, no response kept'
    if scenario == 'replay' and variant == 'redis':
        return 'Redis GET'
    return VARIANTS[variant]


def read_tsv(path):
    with open(path) as f:
        header = f.readline().rstrip('\n').split('\t')
        return [dict(zip(header, line.rstrip('\n').split('\t'))) for line in f if line.strip()]


def fmt_ratio(values):
    if not values:
        return '-'
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}x"
    return f"{med:.2f}x [{min(values):.2f}-{max(values):.2f}]"


def build(out, clients, hot_clients, hot_keys, h='##'):
    """The sections of one run's report; h is the level of their headings."""
    raw = read_tsv(os.path.join(out, 'raw.tsv'))
    extra = read_tsv(os.path.join(out, 'extra.tsv'))
    env = open(os.path.join(out, 'environment.txt')).read().strip()

    syncs = []
    runs = {}      # (sync, scenario, variant) -> list of rows
    by_round = {}  # (sync, round, scenario, variant) -> tps
    for r in raw:
        if r['sync'] not in syncs:
            syncs.append(r['sync'])
        runs.setdefault((r['sync'], r['scenario'], r['variant']), []).append(r)
        by_round[(r['sync'], r['round'], r['scenario'], r['variant'])] = float(r['tps'])
    ex = {}
    for e in extra:
        ex[(e['sync'], e['kind'], e['name'])] = e['value']

    def ratios(sync, num, den):
        """Per-round ratios of tps: num and den are (scenario, variant)."""
        result = []
        for (s, rnd, sc, v), tps in by_round.items():
            if s == sync and (sc, v) == num:
                d = by_round.get((s, rnd) + den)
                if d:
                    result.append(tps / d)
        return result

    def med(rows, key):
        return statistics.median(float(r[key]) for r in rows)

    lines = []
    targets = []
    noise = []
    plot_rows = {}
    for sync in syncs:
        lines.append('')
        lines.append(f'{h} synchronous_commit = {sync}')
        lines.append('')
        lines.append('| scenario | variant | tps | p50 ms | p99 ms | extension ÷ variant | notes |')
        lines.append('|---|---|---:|---:|---:|---:|---|')
        for scenario, title in SCENARIOS:
            title = title.format(hot_clients=hot_clients, hot_keys=hot_keys)
            first = True
            for variant in VARIANT_ORDER:
                rows = runs.get((sync, scenario, variant))
                if not rows:
                    continue
                tps = [float(r['tps']) for r in rows]
                if len(tps) > 1 and statistics.mean(tps) > 0:
                    noise.append((statistics.pstdev(tps) / statistics.mean(tps), sync, scenario, variant))
                ratio = '' if variant == 'ext' else fmt_ratio(ratios(sync, (scenario, 'ext'), (scenario, variant)))
                notes = sorted({r['note'] for r in rows if r.get('note')})
                note = '; '.join(notes)
                if scenario == 'hot':
                    dups = [int(n.split('duplicates=')[1]) for n in notes if 'duplicates=' in n]
                    note = f"duplicate orders: {max(dups) if dups else '?'}"
                elif variant == 'redis':
                    note = 'not transactional with the order'
                lines.append(f"| {title if first else ''} | {variant_label(scenario, variant)} | "
                             f"{statistics.median(tps):,.0f} | {med(rows, 'p50_ms'):.3f} | "
                             f"{med(rows, 'p99_ms'):.3f} | {ratio} | {note} |")
                plot_rows.setdefault(sync, {}).setdefault(scenario, {})[variant] = (
                    statistics.median(tps), med(rows, 'p99_ms'))
                first = False
            if scenario == 'nocomplete' and runs.get((sync, 'nocomplete', 'ext')):
                r = ratios(sync, ('nocomplete', 'ext'), ('new', 'hand'))
                lines.append(f"| | (extension without idem_complete ÷ hand-written SQL with its UPDATE) | | | | {fmt_ratio(r)} | |")

        # sweep and storage
        k = lambda name: ex.get((sync, 'sweep', name))
        if k('beside_keys'):
            lines.append('')
            lines.append(f"Expiry of {int(k('beside_keys')):,} expired keys: `idem_sweep({k('batch')})` in a loop, "
                         f"one transaction per batch, and the background worker (batches of {k('batch')}):")
            lines.append('')
            lines.append('| sweep | keys/s | new-key tps | new-key p50 ms | new-key p99 ms | p99 ÷ without sweep |')
            lines.append('|---|---:|---:|---:|---:|---:|')
            lines.append(f"| none: {clients} clients of new-key transactions alone | | {float(k('base_tps')):,.0f} | "
                         f"{float(k('base_p50_ms')):.3f} | {float(k('base_p99_ms')):.3f} | |")
            for name, label in (('beside', 'idem_sweep beside them'),
                                ('paused', f"idem_sweep beside them, {k('pause_ms')} ms pause between batches"),
                                ('worker', f"background worker beside them (sweep_rate_limit = {int(k('rate_limit') or 0):,})")):
                if not k(name + '_keys'):
                    continue
                lines.append(f"| {label} | {float(k(name + '_keys_per_s')):,.0f} | {float(k(name + '_tps')):,.0f} | "
                             f"{float(k(name + '_p50_ms')):.3f} | {float(k(name + '_p99_ms')):.3f} | "
                             f"{float(k(name + '_p99_ms')) / float(k('base_p99_ms')):.2f}x |")
            lines.append(f"| idem_sweep alone | {float(k('alone_keys_per_s')):,.0f} | | | | |")
            lines.append(f"| hand-written batched DELETE alone | {float(k('hand_keys_per_s')):,.0f} | | | | |")
        s = lambda name: ex.get((sync, 'storage', name))
        if s('ext:bytes_per_key'):
            lines.append('')
            lines.append('| storage after VACUUM | keys | bytes/key | heap | indexes | after VACUUM FULL | average row |')
            lines.append('|---|---:|---:|---:|---:|---:|---:|')
            for v, label in (('ext', 'idem_keys (extension)'), ('hand', 'hand-written table + created_at index')):
                row = s(v + ':row_bytes')
                lines.append(f"| {label} | {int(float(s(v + ':keys'))):,} | {float(s(v + ':bytes_per_key')):.1f} | "
                             f"{float(s(v + ':heap_bytes_per_key')):.1f} | {float(s(v + ':index_bytes_per_key')):.1f} | "
                             f"{float(s(v + ':compact_bytes_per_key')):.1f} | {float(row) if row else float('nan'):.1f} |")

        # targets
        def target(name, values, goal, higher=True, ceiling=None):
            if not values:
                return
            m = statistics.median(values)
            ok = m >= goal if higher else m <= goal
            every = all((v >= goal if higher else v <= goal) for v in values)
            verdict = ('met' if every else 'met (median)') if ok else 'missed'
            if not ok and ceiling and statistics.median(ceiling) < goal:
                verdict += ' (above the ceiling)'
            targets.append((sync, name, fmt_ratio(values) if len(values) > 0 else '-',
                            ('>= ' if higher else '<= ') + f'{goal:g}',
                            fmt_ratio(ceiling) if ceiling else '', verdict))

        # the ceiling: the same statements with no key kept at all, against
        # the same baseline; no claim, however fast, can beat it
        target('new key: extension ÷ hand-written SQL', ratios(sync, ('new', 'ext'), ('new', 'hand')), 1.0,
               ceiling=ratios(sync, ('new', 'bare'), ('new', 'hand')))
        target('new key: extension ÷ PL/pgSQL function', ratios(sync, ('new', 'ext'), ('new', 'plpgsql')), 1.5,
               ceiling=ratios(sync, ('new', 'bare'), ('new', 'plpgsql')))
        target('new key without idem_complete ÷ hand-written SQL',
               ratios(sync, ('nocomplete', 'ext'), ('new', 'hand')), 1.2,
               ceiling=ratios(sync, ('nocomplete', 'bare'), ('new', 'hand')))
        target('replay ÷ prepared primary-key SELECT', ratios(sync, ('replay', 'ext'), ('replay', 'pk')), 0.9)
        if s('ext:bytes_per_key'):
            target('bytes per key: extension ÷ hand-written',
                   [float(s('ext:bytes_per_key')) / float(s('hand:bytes_per_key'))], 1.1, higher=False)
        if k('beside_keys'):
            for name, label in (('beside', ''), ('paused', f", {k('pause_ms')} ms pauses"),
                                ('worker', ' by the background worker')):
                if not k(name + '_keys'):
                    continue
                rate = float(k(name + '_keys_per_s'))
                verdict = 'met' if rate >= 100000 else 'missed'
                limit = int(k('rate_limit') or 0)
                if name == 'worker' and rate < 100000 and limit and rate >= 0.95 * limit:
                    verdict += f' (at its sweep_rate_limit, {limit:,})'
                targets.append((sync, f'sweep{label}: keys deleted per second beside claims', f'{rate:,.0f}',
                                '>= 100,000', '', verdict))
                target(f'sweep{label}: new-key p99 beside the sweep ÷ without',
                       [float(k(name + '_p99_ms')) / float(k('base_p99_ms'))], 1.5, higher=False)

    cg = {name: int(value) for (sync, kind, name), value in ex.items() if kind == 'callgrind'}
    if cg:
        lines.append('')
        lines.append(f'{h} Server CPU per transaction')
        lines.append('')
        lines.append('Instructions executed by the server backend per transaction, counted by callgrind with one')
        lines.append('client (so they do not depend on the machine\'s load). They leave out the kernel\'s and the')
        lines.append('client\'s work per statement, which is the same for variants with the same number of statements.')
        lines.append('')
        lines.append('| scenario | variant | statements | instructions | variant ÷ extension |')
        lines.append('|---|---|---:|---:|---:|')
        statements = {'new:ext': 5, 'new:hand': 5, 'new:plpgsql': 5, 'new:bare': 5, 'new:floor': 1,
                      'nocomplete:ext': 4, 'nocomplete:hand': 4, 'nocomplete:bare': 4,
                      'replay:ext': 1, 'replay:pk': 1, 'replay:hand': 4, 'replay:plpgsql': 1}
        for scenario, title in SCENARIOS:
            title = title.format(hot_clients=hot_clients, hot_keys=hot_keys)
            first = True
            for variant in VARIANT_ORDER:
                name = f'{scenario}:{variant}'
                if name not in cg:
                    continue
                base = cg.get(f'{scenario}:ext')
                ratio = '' if variant == 'ext' or not base else f'{cg[name] / base:.2f}'
                lines.append(f"| {title if first else ''} | {variant_label(scenario, variant)} | "
                             f"{statements.get(name, '')} | {cg[name]:,} | {ratio} |")
                first = False
            if scenario == 'nocomplete' and 'nocomplete:ext' in cg and 'new:hand' in cg:
                lines.append(f"| | (hand-written SQL with its UPDATE ÷ extension without idem_complete) | | | "
                             f"{cg['new:hand'] / cg['nocomplete:ext']:.2f} |")

    big_lines, big_targets, big_rows = big_section(ex, h)
    lines += big_lines
    targets += big_targets

    noise_text = ''
    if noise:
        noise.sort()
        cvs = [n[0] for n in noise]
        worst = noise[-1]
        noise_text = (f"Noise: the throughput of one variant varied between rounds by a coefficient of variation of "
                      f"{statistics.median(cvs) * 100:.0f}% (median over variants), "
                      f"{worst[0] * 100:.0f}% at worst ({worst[2]}/{worst[3]}, synchronous_commit = {worst[1]}).")
    return {'env': env, 'lines': lines, 'targets': targets, 'noise': noise_text,
            'plot_rows': plot_rows, 'syncs': syncs, 'big': big_rows}


INTRO = [
    'Throughput is the median over rounds; p50 and p99 are the medians of each round\'s transaction',
    'latency percentiles. Ratios are the extension\'s throughput divided by the variant\'s, computed within',
    'each round, as median [min-max] over rounds: the variants of a round run one after the other, in an',
    'order that rotates between rounds, so that what else the machine does weighs on all of them alike.',
]

TARGETS_INTRO = [
    'The ceiling is what the same statements reach with no key kept at all (the `bare` variant),',
    'against the same baseline: no claim, however fast, can beat it.',
]


def cmd_report(out, clients, hot_clients, hot_keys):
    r = build(out, clients, hot_clients, hot_keys)
    lines = ['# Benchmark results', '', 'Produced by `test/bench/run.sh`. ' + INTRO[0]] + INTRO[1:]
    lines.append(f'{clients} clients, except the hot-key scenario ({hot_clients} clients on {hot_keys} keys).')
    lines += ['', '```', r['env'], '```']
    lines += r['lines']
    lines += ['', '## Targets', ''] + TARGETS_INTRO + ['']
    lines.append('| synchronous_commit | target | measured | goal | ceiling | verdict |')
    lines.append('|---|---|---:|---:|---:|---|')
    for t in r['targets']:
        lines.append('| ' + ' | '.join(t) + ' |')
    if r['noise']:
        lines += ['', r['noise']]
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    print(text)
    plot(out, [(f'synchronous\\_commit = {sync}', r['plot_rows'][sync]) for sync in r['syncs']],
         clients, hot_clients)


def per_round(ex, prefix):
    """{(param, round): float} of the extra rows named prefix:param:round."""
    result = {}
    for (sync, kind, name), value in ex.items():
        if kind == 'big' and name.startswith(prefix + ':'):
            _, param, rnd = name.split(':')
            result[(param, rnd)] = float(value)
    return result


def big_section(ex, h):
    """The big-transaction tables: COMMIT of N keys, savepoint rollbacks."""
    lines, targets, rows = [], [], {}
    commit = per_round(ex, 'commit_ms')
    if not commit:
        return lines, targets, rows
    growth = per_round(ex, 'growth_kb')
    before = per_round(ex, 'rss_before_kb')
    anon = per_round(ex, 'anon_before_kb')
    plain = per_round(ex, 'plain_ms')
    sizes = sorted({int(n) for n, _ in commit})
    rounds = sorted({r for _, r in commit})
    small = str(sizes[0])
    get = lambda name: ex.get(('all', 'big', name))
    lines.append('')
    lines.append(f'{h} Big transactions')
    lines.append('')
    lines.append(f"N keys claimed in one transaction (`idem_claim` of new keys: the rows are written at COMMIT), "
                 f"then COMMIT, timed by psql; {len(rounds)} round(s), the sizes in an order that rotates between "
                 f"rounds. The peak memory growth is the backend's VmHWM after the COMMIT minus its VmRSS just "
                 f"before it (the peak is reset by writing 5 to /proc/PID/clear_refs just before the COMMIT). The "
                 f"cluster runs with shared_buffers = {get('shmem_big_buffers')}, so that the shared pages the "
                 f"backend touches add little to its RSS, and max_locks_per_transaction = {get('locks')}, since "
                 f"every key holds a lock until the end of its transaction: the shared memory is then "
                 f"{get('shmem_big')}, of which the lock table takes the difference with "
                 f"max_locks_per_transaction = {get('default_locks')} ({get('shmem_small_default_locks')}); with "
                 f"the benchmark's usual settings (shared_buffers = 512MB) it is {get('shmem_normal')}.")
    lines.append('')
    if plain:
        lines.append('')
        lines.append('For reference, each round also writes the same N rows with a plain `INSERT ... SELECT` into a '
                     'table like idem_keys (the same columns and indexes) and commits it: what PostgreSQL itself '
                     'takes per row at that size. The extension\'s COMMIT ÷ that plain INSERT is computed within '
                     'each round.')
    lines.append('')
    lines.append(f'| keys | COMMIT ms | µs per key | per key ÷ per key at {int(small):,} keys | '
                 f'plain INSERT µs per row | plain per row ÷ at {int(small):,} | COMMIT ÷ plain INSERT | '
                 f'backend RSS before COMMIT, MB (private) | peak growth during COMMIT, MB | bytes per key |')
    lines.append('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for n in sizes:
        key = str(n)
        ms = [commit[(key, r)] for r in rounds if (key, r) in commit]
        ratio = [(commit[(key, r)] / n) / (commit[(small, r)] / int(small))
                 for r in rounds if (key, r) in commit and (small, r) in commit]
        g = [growth[(key, r)] for r in rounds if (key, r) in growth]
        b = [before[(key, r)] for r in rounds if (key, r) in before]
        a = [anon[(key, r)] for r in rounds if (key, r) in anon]
        gm = statistics.median(g) if g else float('nan')
        pl = [plain[(key, r)] for r in rounds if (key, r) in plain]
        pl_ratio = [(plain[(key, r)] / n) / (plain[(small, r)] / int(small))
                    for r in rounds if (key, r) in plain and (small, r) in plain]
        vs_plain = [commit[(key, r)] / plain[(key, r)] for r in rounds if (key, r) in plain and (key, r) in commit]
        rows[n] = {'ratio': ratio, 'us_per_key': statistics.median(ms) * 1000 / n, 'growth_mb': gm / 1024,
                   'growth_max_mb': max(g) / 1024 if g else float('nan'), 'plain_ratio': pl_ratio,
                   'vs_plain': vs_plain}
        rss = f"{statistics.median(b) / 1024:,.1f}"
        if a:
            rss += f" ({statistics.median(a) / 1024:,.1f})"
        lines.append(f"| {n:,} | {statistics.median(ms):,.0f} | {statistics.median(ms) * 1000 / n:.2f} | "
                     f"{'' if key == small else fmt_ratio(ratio)} | "
                     f"{statistics.median(pl) * 1000 / n if pl else float('nan'):.2f} | "
                     f"{'' if key == small else fmt_ratio(pl_ratio)} | {fmt_ratio(vs_plain)} | {rss} | "
                     f"{gm / 1024:,.1f} (max {max(g) / 1024:,.1f}) | {gm * 1024 / n:,.0f} |")
        if key != small:
            targets.append(('on', f'big COMMIT: time per key at {n:,} keys ÷ at {int(small):,}', fmt_ratio(ratio),
                            '<= 1.2', '', 'met' if statistics.median(ratio) <= 1.2 else 'missed'))
    largest = sizes[-1]
    if largest >= 1000000:
        worst = rows[largest]['growth_max_mb']
        targets.append(('on', f'big COMMIT of {largest:,} keys: backend peak memory growth',
                        f'{worst:,.1f} MB (worst round)', '< 200 MB', '', 'met' if worst < 200 else 'missed'))
    sp = per_round(ex, 'savepoint_s')
    if sp:
        k = int(get('savepoint_keys'))
        ratio = [sp[('with', r)] / sp[('without', r)] for r in rounds if ('with', r) in sp and ('without', r) in sp]
        rows['savepoint'] = ratio
        lines.append('')
        lines.append(f"{k:,} loops of `SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s;` (one round trip each) in "
                     f"one transaction, after {k:,} claims in it and without them, timed by the server "
                     f"(clock_timestamp() before the first loop and after the last), with and without in an "
                     f"order that rotates between rounds:")
        lines.append('')
        lines.append('| savepoint rollbacks | seconds | with claims ÷ without |')
        lines.append('|---|---:|---:|')
        lines.append(f"| after {k:,} claims | {statistics.median(sp[('with', r)] for r in rounds):.2f} | "
                     f"{fmt_ratio(ratio)} |")
        lines.append(f"| without claims | {statistics.median(sp[('without', r)] for r in rounds):.2f} | |")
        targets.append(('on', f'savepoint rollback after {k:,} claims ÷ without', fmt_ratio(ratio), '<= 1.2', '',
                        'met' if statistics.median(ratio) <= 1.2 else 'missed'))
    return lines, targets, rows


def plot(out, panels, clients, hot_clients):
    """Bars of throughput and p99 per scenario and variant, one row per panel
    (a setting, or a major and a setting): panels are (title, rows)."""
    scen_labels = {'new': 'new key', 'nocomplete': 'no complete', 'replay': 'replay',
                   'hot': f'hot keys ({hot_clients} cl.)'}
    variants = [v for v in VARIANT_ORDER if any(v in sc for _, rows in panels for sc in rows.values())]
    dats = []
    for i, (title, rows) in enumerate(panels):
        dat = os.path.join(out, f'plot_{i}.dat')
        dats.append((title, dat))
        with open(dat, 'w') as f:
            f.write('# scenario ' + ' '.join(f'tps_{v} p99_{v}' for v in variants) + '\n')
            for sc in ('new', 'nocomplete', 'replay', 'hot'):
                row = rows.get(sc)
                if not row:
                    continue
                cells = []
                for v in variants:
                    if v in row:
                        cells += [f'{row[v][0]:.1f}', f'{row[v][1]:.3f}']
                    else:
                        cells += ['-', '-']
                f.write(f'"{scen_labels[sc]}" ' + ' '.join(cells) + '\n')
    colors = {'ext': '#1b7837', 'hand': '#2166ac', 'plpgsql': '#b2182b', 'pk': '#8073ac',
              'redis': '#e08214', 'bare': '#cccccc', 'floor': '#999999'}
    titles = {'ext': 'extension', 'hand': 'hand-written SQL', 'plpgsql': 'PL/pgSQL function',
              'pk': 'PK SELECT', 'redis': 'Redis (not transactional)',
              'bare': 'same statements, no key (ceiling)', 'floor': 'order alone (floor)'}
    gp = []
    gp.append("set terminal pngcairo size 1400,%d font 'sans,10'" % (420 * len(panels)))
    gp.append(f"set output '{os.path.join(out, 'results.png')}'")
    gp.append("set datafile missing '-'")
    gp.append("set style data histogram")
    gp.append("set style histogram clustered gap 1")
    gp.append("set style fill solid 0.9 border -1")
    gp.append("set boxwidth 0.9")
    gp.append("set grid ytics")
    gp.append("set logscale y")
    gp.append("set key outside bottom center horizontal font 'sans,9'")
    gp.append("set xrange [-0.6:3.6]")
    gp.append(f"set multiplot layout {len(panels)},2 title 'idempotency benchmark ({clients} clients; median of rounds)'")
    for title, dat in dats:
        for metric, col_off, ylabel in (('tps', 0, 'transactions per second (log)'),
                                        ('p99', 1, 'p99 latency, ms (log)')):
            gp.append(f"set title '{metric} — {title}'")
            gp.append(f"set ylabel '{ylabel}'")
            plots = []
            for i, v in enumerate(variants):
                col = 2 + 2 * i + col_off
                plots.append(f"'{dat}' using {col}:xtic(1) title '{titles[v]}' lc rgb '{colors[v]}'")
            gp.append('plot ' + ', \\\n     '.join(plots))
    gp.append('unset multiplot')
    script = os.path.join(out, 'plot.gp')
    with open(script, 'w') as f:
        f.write('\n'.join(gp) + '\n')
    if panels:
        subprocess.run(['gnuplot', script], check=True)


def compare_section(out, clients, h='##'):
    """The current build against an earlier revision: throughput ratios of the
    new-key and replay scenarios, and the storage per key of each."""
    raw = read_tsv(os.path.join(out, 'raw.tsv'))
    ex = {(e['sync'], e['kind'], e['name']): e['value'] for e in read_tsv(os.path.join(out, 'extra.tsv'))}
    env = open(os.path.join(out, 'environment.txt')).read().strip()
    cur = ex.get(('all', 'compare', 'current_version'), 'current')
    base = ex.get(('all', 'compare', 'base_version'), 'base')
    base_commit = ex.get(('all', 'compare', 'base_commit'), '')
    tps = {}
    syncs = []
    for r in raw:
        if r['sync'] not in syncs:
            syncs.append(r['sync'])
        tps[(r['sync'], r['round'], r['scenario'], r['variant'])] = float(r['tps'])
    lines, targets = [], []
    lines.append('')
    lines.append(f'{h} Version {cur} against version {base}')
    lines.append('')
    lines.append(f"The extension as it is now ({cur}) and as it was at commit {base_commit} ({base}), each built "
                 f"and installed into its own copy of the same PostgreSQL and run in its own cluster, the two "
                 f"started side by side with identical settings. Each round runs a scenario on one cluster and "
                 f"then on the other, the order alternating between rounds; the ratio is {cur} ÷ {base} within "
                 f"a round, median [min-max] over rounds. {clients} clients, pgbench -M prepared, the scripts "
                 f"`new_ext.sql` and `replay_ext.sql`.")
    lines += ['', '```', env, '```', '']
    lines.append(f'| synchronous_commit | scenario | {cur} tps | {base} tps | {cur} ÷ {base} | goal | verdict |')
    lines.append('|---|---|---:|---:|---:|---:|---|')
    labels = {'new': 'new key: claim + order + complete', 'replay': 'replay of a completed key'}
    for sync in syncs:
        for scenario in ('new', 'replay'):
            rounds = sorted({rnd for (s_, rnd, sc, v) in tps if s_ == sync and sc == scenario})
            ratio = [tps[(sync, r, scenario, 'current')] / tps[(sync, r, scenario, 'base')] for r in rounds
                     if (sync, r, scenario, 'current') in tps and (sync, r, scenario, 'base') in tps]
            if not ratio:
                continue
            c = statistics.median(tps[(sync, r, scenario, 'current')] for r in rounds if (sync, r, scenario, 'current') in tps)
            b = statistics.median(tps[(sync, r, scenario, 'base')] for r in rounds if (sync, r, scenario, 'base') in tps)
            verdict = 'met' if statistics.median(ratio) >= 0.97 else \
                f'missed by {(0.97 - statistics.median(ratio)) * 100:.1f} points'
            lines.append(f'| {sync} | {labels[scenario]} | {c:,.0f} | {b:,.0f} | {fmt_ratio(ratio)} | >= 0.97 | {verdict} |')
            targets.append((sync, f'{labels[scenario]}: {cur} ÷ {base}', fmt_ratio(ratio), '>= 0.97', '', verdict))
    cg = {name: int(value) for (sync, kind, name), value in ex.items() if kind == 'callgrind'}
    if cg:
        lines.append('')
        lines.append('Instructions the server backend executes per transaction, counted by callgrind with one client '
                     '(synchronous_commit = off), which the machine\'s load does not change:')
        lines.append('')
        lines.append(f'| scenario | {cur} | {base} | {cur} ÷ {base} |')
        lines.append('|---|---:|---:|---:|')
        for scenario in ('new', 'replay'):
            c, b = cg.get(f'current:{scenario}'), cg.get(f'base:{scenario}')
            if c and b:
                lines.append(f'| {labels[scenario]} | {c:,} | {b:,} | {c / b:.3f} |')
    lines.append('')
    lines.append(f'| synchronous_commit | storage after VACUUM | keys | bytes/key | heap | indexes | after VACUUM FULL | average row |')
    lines.append('|---|---|---:|---:|---:|---:|---:|---:|')
    for sync in syncs:
        st = lambda name: ex.get((sync, 'storage', name))
        if not st('current:bytes_per_key') or not st('base:bytes_per_key'):
            continue
        for v, label in (('current', cur), ('base', base)):
            lines.append(f"| {sync} | idem_keys, {label} | {int(float(st(v + ':keys'))):,} | "
                         f"{float(st(v + ':bytes_per_key')):.1f} | {float(st(v + ':heap_bytes_per_key')):.1f} | "
                         f"{float(st(v + ':index_bytes_per_key')):.1f} | {float(st(v + ':compact_bytes_per_key')):.1f} | "
                         f"{float(st(v + ':row_bytes')):.1f} |")
        d = float(st('current:bytes_per_key')) - float(st('base:bytes_per_key'))
        dc = float(st('current:compact_bytes_per_key')) - float(st('base:compact_bytes_per_key'))
        targets.append((sync, f'storage per key: {cur} − {base}, after VACUUM', f'{d:+.1f} bytes', '<= +8', '',
                        'met' if d <= 8 else f'missed by {d - 8:.1f} bytes'))
        targets.append((sync, f'storage per key: {cur} − {base}, after VACUUM FULL', f'{dc:+.1f} bytes', '<= +8', '',
                        'met' if dc <= 8 else f'missed by {dc - 8:.1f} bytes'))
    return lines, targets


def cmd_compare(out, clients):
    lines, targets = compare_section(out, clients, '#')
    lines = lines[1:] + ['', '| synchronous_commit | target | measured | goal | ceiling | verdict |', '|---|---|---:|---:|---:|---|']
    lines += ['| ' + ' | '.join(t) + ' |' for t in targets]
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    print(text)


def cmd_combine(out, clients, hot_clients, hot_keys):
    """results.md and results.png of several majors (out/pgNN) and of a
    comparison (out/compare), side by side."""
    majors = sorted((d for d in os.listdir(out) if d.startswith('pg') and
                     os.path.exists(os.path.join(out, d, 'raw.tsv'))), key=lambda d: int(d[2:]))
    built = {d: build(os.path.join(out, d), clients, hot_clients, hot_keys, '###') for d in majors}
    # big transactions measured by a separate run (run.sh --big-only --out DIR/big) replace the main run's
    big_env = {}
    for d in majors:
        alt = os.path.join(out, 'big', d)
        if os.path.exists(os.path.join(alt, 'extra.tsv')):
            ex = {(e['sync'], e['kind'], e['name']): e['value'] for e in read_tsv(os.path.join(alt, 'extra.tsv'))}
            big_lines, big_targets, big_rows = big_section(ex, '###')
            r = built[d]
            start = next((i for i, l in enumerate(r['lines']) if l == '### Big transactions'), None)
            end = next((i for i, l in enumerate(r['lines']) if start is not None and i > start
                        and l.startswith('### ')), len(r['lines']))
            if start is not None:
                r['lines'] = r['lines'][:start - 1] + r['lines'][end:]
            env = [l for l in open(os.path.join(alt, 'environment.txt')).read().strip().split('\n')
                   if not l.startswith(('settings:', '  replay keys', '  callgrind', 'pgbench:', 'redis:'))]
            r['lines'] += big_lines[:3] + ['Measured by a separate run of `run.sh --big-only`:', '', '```'] + env + \
                ['```', ''] + [l for i, l in enumerate(big_lines[3:]) if l or (i > 0 and big_lines[3 + i - 1])]
            r['targets'] = [t for t in r['targets'] if not t[1].startswith(('big ', 'savepoint'))] + big_targets
            r['big'] = big_rows
    names = {d: f'PostgreSQL {d[2:]}' for d in majors}
    # comparisons: DIR/compare, and any more runs of it kept as DIR/compare-*
    comps = [compare_section(os.path.join(out, d), clients, '##')
             for d in sorted(os.listdir(out)) if d.startswith('compare') and
             os.path.exists(os.path.join(out, d, 'raw.tsv'))]
    if len(comps) > 1:
        for i, c in enumerate(comps):
            c[0][1] += f' (run {i + 1} of {len(comps)})'
    comp = comps[0] if comps else None

    lines = ['# Benchmark results', '']
    lines.append('Produced by `test/bench/run.sh` with ' + ' and '.join(names.values()) +
                 ', one after the other in one invocation; every figure is a ratio of two measurements made in '
                 'the same run.' + (' Some parts were measured again by further invocations (the big '
                                    'transactions with `--big-only`, a comparison with more rounds): their '
                                    'sections say so and show their settings.'
                                    if os.path.isdir(os.path.join(out, 'big')) or len(comps) > 1 else ''))
    lines += [''] + INTRO
    lines.append(f'{clients} clients, except the hot-key scenario ({hot_clients} clients on {hot_keys} keys).')
    lines.append('')
    lines.append('Contents: [targets side by side](#targets-side-by-side), '
                 + ('[big transactions](#big-transactions-side-by-side), ' if any(built[d]['big'] for d in majors) else '')
                 + ('[the previous version](#' + re.sub(r'[^a-z0-9 -]', '', comp[0][1].lstrip('# ').lower()).replace(' ', '-') + '), ' if comp else '')
                 + ', '.join(f'[{names[d]}](#{names[d].lower().replace(" ", "-")})' for d in majors) + '.')

    # the targets, one column per major
    lines += ['', '## Targets side by side', ''] + TARGETS_INTRO + ['']
    keys = []
    for d in majors:
        for t in built[d]['targets']:
            if (t[0], t[1], t[3]) not in keys:
                keys.append((t[0], t[1], t[3]))
    lines.append('| synchronous_commit | target | goal | ' + ' | '.join(names[d] for d in majors) + ' |')
    lines.append('|---|---|---:|' + '---|' * len(majors))
    for key in keys:
        cells = []
        for d in majors:
            t = next((t for t in built[d]['targets'] if (t[0], t[1], t[3]) == key), None)
            cells.append(f'{t[2]}: {t[5]}' if t else '-')
        lines.append(f'| {key[0]} | {key[1]} | {key[2]} | ' + ' | '.join(cells) + ' |')

    # big transactions, one column per major
    if any(built[d]['big'] for d in majors):
        lines += ['', '## Big transactions side by side', '']
        lines.append('COMMIT of N keys claimed in one transaction: time per key relative to the smallest N '
                     '(flat is the goal), and the backend\'s peak memory growth during the COMMIT; then savepoint '
                     'rollbacks after many claims against the same without them. The method and the absolute '
                     'figures are in each major\'s section below.')
        lines.append('')
        lines.append('| measure | ' + ' | '.join(names[d] for d in majors) + ' |')
        lines.append('|---|' + '---:|' * len(majors))
        sizes = sorted({n for d in majors for n in built[d]['big'] if isinstance(n, int)})
        for n in sizes[1:]:
            lines.append(f'| COMMIT time per key, {n:,} keys ÷ {sizes[0]:,} keys | ' +
                         ' | '.join(fmt_ratio(built[d]['big'][n]['ratio']) if n in built[d]['big'] else '-'
                                    for d in majors) + ' |')
            lines.append(f'| the same for a plain INSERT of the rows, {n:,} ÷ {sizes[0]:,} | ' +
                         ' | '.join(fmt_ratio(built[d]['big'][n]['plain_ratio']) if n in built[d]['big'] else '-'
                                    for d in majors) + ' |')
        for n in sizes:
            lines.append(f'| COMMIT of {n:,} keys ÷ plain INSERT of {n:,} rows | ' +
                         ' | '.join(fmt_ratio(built[d]['big'][n]['vs_plain']) if n in built[d]['big'] else '-'
                                    for d in majors) + ' |')
        for n in sizes:
            lines.append(f'| peak memory growth during the COMMIT of {n:,} keys, MB (worst round) | ' +
                         ' | '.join(f"{built[d]['big'][n]['growth_max_mb']:,.1f}" if n in built[d]['big'] else '-'
                                    for d in majors) + ' |')
        lines.append('| savepoint rollbacks after the claims ÷ without | ' +
                     ' | '.join(fmt_ratio(built[d]['big'].get('savepoint', [])) for d in majors) + ' |')

    for c in comps:
        lines += c[0]
        lines += ['', '| synchronous_commit | target | measured | goal | verdict |', '|---|---|---:|---:|---|']
        lines += [f'| {t[0]} | {t[1]} | {t[2]} | {t[3]} | {t[5]} |' for t in c[1]]

    for d in majors:
        r = built[d]
        lines += ['', f'## {names[d]}', '', '```', r['env'], '```']
        lines += r['lines']
        if r['noise']:
            lines += ['', r['noise']]

    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(text)
    print(text)
    plot(out, [(f'{names[d]}, synchronous\\_commit = {sync}', built[d]['plot_rows'][sync])
               for d in majors for sync in built[d]['syncs']], clients, hot_clients)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == 'latency':
        cmd_latency(sys.argv[2])
    elif cmd == 'window':
        cmd_window(sys.argv[2], sys.argv[3])
    elif cmd == 'report':
        cmd_report(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == 'combine':
        cmd_combine(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == 'compare':
        cmd_compare(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
