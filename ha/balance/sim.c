/* ember-balance-sim: the balancer (ha/balance/balance.h) on generated
 * clusters, round after round until no move is proposed, with the
 * checker watching every round (docs/balancing.md, "Simulator").
 *
 *   ember-balance-sim [--hosts N] [--vms-per-host K] [--seed S] [--level L]
 *       [--rounds R] [--max-moves M] [--max-concurrent C] [--rules]
 *       [--maintenance H] [--noise F] [--donors D] [--receivers R]
 *       [--overhead-mib M] [--json]
 *
 * Exit 0; 1 when the checker saw a must rule newly broken or memory
 * overcommitted, or the balancer failed; 2 on bad arguments. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ha/balance/balance.h"

#define GIB (1ULL << 30)
#define MIB (1ULL << 20)
#define RECENT_ROUNDS 3

struct sim_args {
	uint32_t hosts, per_host, rounds, maintenance, seed, level;
	uint32_t max_moves, max_concurrent;
	uint32_t donors, receivers, overhead_mib; /* 0: the defaults */
	double noise;
	int rules, json;
};

static uint64_t rng_state;
static uint64_t rnd(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
static double unif(void)
{
	return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* CPU time of this thread: what the round costs, however busy the
 * machine is (wall time is printed too). */
static double now_ms(clockid_t clk)
{
	struct timespec t;
	clock_gettime(clk, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int parse(int argc, char **argv, struct sim_args *a)
{
	*a = (struct sim_args){.hosts = 100, .per_host = 50, .rounds = 50, .seed = 1, .level = 3};
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!strcmp(k, "--rules")) {
			a->rules = 1;
			continue;
		}
		if (!strcmp(k, "--json")) {
			a->json = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "ember-balance-sim: %s needs a value (or is unknown)\n", k);
			return -EINVAL;
		}
		i++;
		errno = 0;
		double d = strtod(v, &end);
		if (errno || end == v || *end || d < 0 || d > 4e9) {
			fprintf(stderr, "ember-balance-sim: %s: bad number '%s'\n", k, v);
			return -EINVAL;
		}
		const struct {
			const char *name;
			uint32_t *to;
		} ints[] = {{"--hosts", &a->hosts},
			    {"--vms-per-host", &a->per_host},
			    {"--seed", &a->seed},
			    {"--level", &a->level},
			    {"--rounds", &a->rounds},
			    {"--max-moves", &a->max_moves},
			    {"--max-concurrent", &a->max_concurrent},
			    {"--maintenance", &a->maintenance},
			    {"--donors", &a->donors},
			    {"--receivers", &a->receivers},
			    {"--overhead-mib", &a->overhead_mib}};
		size_t n = 0, nints = sizeof(ints) / sizeof(ints[0]);
		while (n < nints && strcmp(k, ints[n].name))
			n++;
		if (n < nints)
			*ints[n].to = (uint32_t)d;
		else if (!strcmp(k, "--noise"))
			a->noise = d;
		else {
			fprintf(stderr, "ember-balance-sim: unknown option %s\n", k);
			return -EINVAL;
		}
	}
	if (a->hosts < 2 || a->per_host < 1 || a->level < 1 || a->level > 5 ||
	    a->maintenance >= a->hosts || (uint64_t)a->hosts * a->per_host > 10000000) {
		fprintf(stderr, "ember-balance-sim: need 2+ hosts, 1+ VMs each, level 1..5, "
				"maintenance < hosts\n");
		return -EINVAL;
	}
	return 0;
}

struct sim {
	struct ha_bal_cluster c;
	struct ha_bal_rule *rules;
	uint32_t *rule_vms, *rule_hosts;
	uint64_t *base_cpu;
	char *names;
};

/* Hosts of 64 cores (millicores) and 512 GiB; each host's VMs sized so it
 * sits at a random load in [0.1, 1.0] (the skew), CPU and memory apart. */
static int generate(struct sim *s, const struct sim_args *a)
{
	uint32_t nh = a->hosts, nv = a->hosts * a->per_host;
	s->c.hosts = calloc(nh, sizeof(*s->c.hosts));
	s->c.vms = calloc(nv, sizeof(*s->c.vms));
	s->base_cpu = calloc(nv, sizeof(*s->base_cpu));
	s->names = malloc(((size_t)nh + nv) * 16);
	if (!s->c.hosts || !s->c.vms || !s->base_cpu || !s->names)
		return -ENOMEM;
	s->c.nr_hosts = nh, s->c.nr_vms = nv;
	char *nm = s->names;
	for (uint32_t h = 0; h < nh; h++) {
		snprintf(nm, 16, "h%u", h);
		s->c.hosts[h] =
		    (struct ha_bal_host){nm, 64000, 512 * GIB, true, h < a->maintenance};
		nm += 16;
		double skew = 0.1 + 0.9 * unif(), mskew = 0.1 + 0.8 * unif();
		uint64_t mem_left = 512 * GIB;
		for (uint32_t i = 0; i < a->per_host; i++) {
			uint32_t v = h * a->per_host + i;
			snprintf(nm, 16, "vm%u", v);
			uint64_t mem =
			    (uint64_t)(mskew * 512.0 * GIB / a->per_host * (0.25 + 1.5 * unif())) &
			    ~(256 * MIB - 1);
			if (mem < 256 * MIB)
				mem = 256 * MIB;
			if (mem > mem_left)
				mem = mem_left;
			mem_left -= mem;
			uint64_t cpu =
			    (uint64_t)(skew * 64000.0 / a->per_host * (0.25 + 1.5 * unif()));
			uint64_t dirty = unif() < 0.1 ? 500 * MIB : (uint64_t)(unif() * 100 * MIB);
			s->c.vms[v] = (struct ha_bal_vm){nm, h, cpu, mem, dirty, HA_BAL_NONE, NULL};
			s->base_cpu[v] = cpu;
			nm += 16;
		}
	}
	if (!a->rules)
		return 0;
	/* Rules over random VMs (violations at the start are the first
	 * round's to fix): anti-affinity triples for 3% of VMs, affinity
	 * pairs for 2%, must-run-on a "rack" (a fifth of the hosts) for 5%,
	 * must-not-run-on for 2%, should-run-on for 2%. */
	uint32_t nanti = nv / 100, naff = nv / 100, nmust = nv / 20, nnot = nv / 50,
		 nshould = nv / 50;
	uint32_t nrules = nanti + naff + 3, rack = nh / 5 ? nh / 5 : 1;
	s->rules = calloc(nrules, sizeof(*s->rules));
	s->rule_vms = calloc((size_t)3 * nanti + 2 * naff + nmust + nnot + nshould + 1, 4);
	s->rule_hosts = calloc((size_t)rack * 3 + 1, 4);
	if (!s->rules || !s->rule_vms || !s->rule_hosts)
		return -ENOMEM;
	uint32_t *vp = s->rule_vms, r = 0;
	/* VMs picked without repeats across rules: a permutation's prefix */
	uint32_t *perm = malloc((size_t)nv * sizeof(*perm)), pi = 0;
	if (!perm)
		return -ENOMEM;
	for (uint32_t v = 0; v < nv; v++)
		perm[v] = v;
	for (uint32_t v = nv - 1; v > 0; v--) {
		uint32_t j = (uint32_t)(rnd() % (v + 1)), t = perm[v];
		perm[v] = perm[j], perm[j] = t;
	}
	for (uint32_t i = 0; i < nanti; i++, vp += 3)
		vp[0] = perm[pi++], vp[1] = perm[pi++], vp[2] = perm[pi++],
		s->rules[r++] =
		    (struct ha_bal_rule){"spread", HA_BAL_ANTI_AFFINITY, vp, 3, NULL, 0};
	for (uint32_t i = 0; i < naff; i++, vp += 2)
		vp[0] = perm[pi++], vp[1] = perm[pi++],
		s->rules[r++] = (struct ha_bal_rule){"together", HA_BAL_AFFINITY, vp, 2, NULL, 0};
	static const struct {
		const char *name;
		enum ha_bal_kind kind;
	} groups[3] = {{"rack-a", HA_BAL_MUST_RUN_ON},
		       {"not-rack-b", HA_BAL_MUST_NOT_RUN_ON},
		       {"prefer-rack-c", HA_BAL_SHOULD_RUN_ON}};
	uint32_t counts[3] = {nmust, nnot, nshould};
	for (int g = 0; g < 3; g++) {
		uint32_t *hp = s->rule_hosts + (size_t)g * rack;
		for (uint32_t i = 0; i < rack; i++)
			hp[i] = (a->maintenance + (uint32_t)g * rack + i) % nh;
		for (uint32_t i = 0; i < counts[g]; i++)
			vp[i] = perm[pi++];
		s->rules[r++] =
		    (struct ha_bal_rule){groups[g].name, groups[g].kind, vp, counts[g], hp, rack};
		vp += counts[g];
	}
	free(perm);
	s->c.rules = s->rules, s->c.nr_rules = r;
	return 0;
}

/* The band estimate of docs/balancing.md: VMs that must leave hosts above
 * mean + target, biggest first, for all to be within it (and every VM of
 * a host in maintenance).  On the cluster as generated: host h holds VMs
 * h * per_host ... */
/* Each host's load into load[]; the mean over those not in maintenance
 * (alive all: the simulator kills none).  -1: out of memory. */
static double host_loads(const struct ha_bal_cluster *c, double *load)
{
	uint64_t *use = calloc(2 * (size_t)c->nr_hosts, sizeof(*use));
	double sum = 0;
	uint32_t n = 0;
	if (!use)
		return -1;
	for (uint32_t v = 0; v < c->nr_vms; v++)
		use[2 * c->vms[v].host] += c->vms[v].cpu,
		    use[2 * c->vms[v].host + 1] += c->vms[v].mem;
	for (uint32_t h = 0; h < c->nr_hosts; h++) {
		double x = (double)use[2 * h] / c->hosts[h].cpu_cap,
		       y = (double)use[2 * h + 1] / c->hosts[h].mem_cap;
		load[h] = x > y ? x : y;
		if (!c->hosts[h].maintenance)
			sum += load[h], n++;
	}
	free(use);
	return n ? sum / n : 0;
}

/* Hosts above mean + target (did balancing meet the band goal too?). */
static uint32_t above_band(const struct ha_bal_cluster *c, double target)
{
	double *load = calloc(c->nr_hosts, sizeof(*load));
	uint32_t n = 0;
	double mean = load ? host_loads(c, load) : -1;
	for (uint32_t h = 0; mean >= 0 && isfinite(target) && h < c->nr_hosts; h++)
		n += !c->hosts[h].maintenance && load[h] > mean + target;
	free(load);
	return n;
}

static uint64_t lower_bound(const struct ha_bal_cluster *c, const struct sim_args *a, double target)
{
	double *load = calloc(c->nr_hosts, sizeof(*load)), *d = NULL;
	uint64_t bound = 0;
	d = calloc(a->per_host * 4 + 1, sizeof(*d));
	if (!load || !d || !isfinite(target))
		goto out;
	double sum = host_loads(c, load);
	if (sum < 0)
		goto out;
	double band = sum + target;
	for (uint32_t h = 0; h < c->nr_hosts; h++) {
		if (c->hosts[h].maintenance) { /* every VM leaves */
			bound += a->per_host;
			continue;
		}
		double excess = load[h] - band;
		if (excess <= 0)
			continue;
		uint32_t k = 0;
		for (uint32_t v = h * a->per_host; k < a->per_host; v++) { /* as generated */
			double x = (double)c->vms[v].cpu / c->hosts[h].cpu_cap,
			       y = (double)c->vms[v].mem / c->hosts[h].mem_cap;
			d[k++] = x > y ? x : y;
		}
		while (excess > 0 && k) { /* take the biggest left */
			uint32_t big = 0;
			for (uint32_t i = 1; i < k; i++)
				if (d[i] > d[big])
					big = i;
			excess -= d[big];
			d[big] = d[--k];
			bound++;
		}
	}
out:
	free(load), free(d);
	return bound;
}

int main(int argc, char **argv)
{
	struct sim_args a;
	if (parse(argc, argv, &a))
		return 2;
	rng_state = a.seed;
	struct sim s = {0};
	struct ha_bal_opts o;
	if (generate(&s, &a) || ha_bal_opts_init(&o, a.level)) {
		fprintf(stderr, "ember-balance-sim: out of memory\n");
		return 1;
	}
	o.max_moves = a.max_moves, o.max_concurrent = a.max_concurrent;
	if (a.donors)
		o.donors = a.donors;
	if (a.receivers)
		o.receivers = a.receivers;
	if (a.overhead_mib)
		o.move_overhead = (uint64_t)a.overhead_mib * MIB;
	uint32_t nv = s.c.nr_vms;
	struct ha_bal_plan p = {.cap_moves = nv, .cap_notes = 4096};
	p.moves = calloc(nv, sizeof(*p.moves));
	p.notes = calloc(p.cap_notes, sizeof(*p.notes));
	/* recent: the last RECENT_ROUNDS rounds' moves; left: every host a
	 * VM ever left, to count returns (A -> B -> A) */
	struct ha_bal_recent *recent = calloc((size_t)nv * RECENT_ROUNDS + 1, sizeof(*recent));
	uint32_t win[RECENT_ROUNDS] = {0}, nwin = 0; /* moves per round in the window */
	uint32_t *left = malloc((size_t)nv * sizeof(*left));
	if (!p.moves || !p.notes || !recent || !left) {
		fprintf(stderr, "ember-balance-sim: out of memory\n");
		return 1;
	}
	for (uint32_t v = 0; v < nv; v++)
		left[v] = HA_BAL_NONE;
	uint32_t must0, should0, must, should;
	ha_bal_check(&s.c, NULL, 0, &must0, &should0);
	double before = ha_bal_imbalance(&s.c);
	uint32_t above_band_before = above_band(&s.c, o.target);
	uint64_t bound = lower_bound(&s.c, &a, o.target), moves = 0, bytes = 0, returns = 0;
	uint64_t by_reason[3] = {0};
	double first_ms = 0, max_ms = 0, max_wall = 0, sum_ms = 0, first_after = before;
	uint32_t rounds = 0, notes = 0, worst_must = must0, nrec = 0;
	int stable = 0, failed = 0;
	uint32_t stable_at = 0;
	uint64_t after_stable = 0; /* moves once a round had none (noise) */
	char err[256];
	for (; rounds < a.rounds; rounds++) {
		if (a.noise > 0)
			for (uint32_t v = 0; v < nv; v++)
				s.c.vms[v].cpu =
				    (uint64_t)(s.base_cpu[v] * (1.0 + a.noise * (2 * unif() - 1)));
		s.c.recent = recent, s.c.nr_recent = nrec;
		double t0 = now_ms(CLOCK_THREAD_CPUTIME_ID), w0 = now_ms(CLOCK_MONOTONIC);
		int rc = ha_bal_plan(&s.c, &o, &p, err, sizeof(err));
		double ms = now_ms(CLOCK_THREAD_CPUTIME_ID) - t0,
		       wall = now_ms(CLOCK_MONOTONIC) - w0;
		max_wall = wall > max_wall ? wall : max_wall;
		if (rc) {
			fprintf(stderr, "ember-balance-sim: plan: %s\n", err);
			failed = 1;
			break;
		}
		if (!rounds)
			first_ms = ms, first_after = p.imbalance_after;
		max_ms = ms > max_ms ? ms : max_ms;
		sum_ms += ms;
		notes = p.nr_notes + p.notes_dropped;
		o.resume = p.capped;
		if (!p.nr_moves) {
			if (!stable)
				stable = 1, stable_at = rounds;
			if (a.noise > 0) /* keep going: does noise bring moves back? */
				continue;
			break;
		}
		if (stable)
			after_stable += p.nr_moves;
		/* slide the recent window: drop the oldest round's moves */
		if (nwin == RECENT_ROUNDS) {
			memmove(recent, recent + win[0], (nrec - win[0]) * sizeof(*recent));
			nrec -= win[0];
			memmove(win, win + 1, (RECENT_ROUNDS - 1) * sizeof(*win));
			nwin--;
		}
		for (uint32_t i = 0; i < p.nr_moves; i++) {
			const struct ha_bal_move *m = &p.moves[i];
			returns += left[m->vm] == m->to;
			left[m->vm] = m->from;
			bytes += m->cost;
			by_reason[m->reason]++;
			recent[nrec++] = (struct ha_bal_recent){m->vm, m->from};
		}
		win[nwin++] = p.nr_moves;
		moves += p.nr_moves;
		ha_bal_apply(&s.c, &p);
		ha_bal_check(&s.c, NULL, 0, &must, &should);
		if (must > worst_must) {
			fprintf(stderr,
				"ember-balance-sim: round %u: %u must violations (had %u)\n",
				rounds, must, worst_must);
			failed = 1;
		}
	}
	ha_bal_check(&s.c, NULL, 0, &must, &should);
	double after = ha_bal_imbalance(&s.c);
	/* one placement (VM 0 as if new): what failover pays per VM */
	uint32_t where;
	double t0 = now_ms(CLOCK_THREAD_CPUTIME_ID);
	int prc = ha_bal_place(&s.c, &o, 0, &where, err, sizeof(err));
	double place_ms = now_ms(CLOCK_THREAD_CPUTIME_ID) - t0;
	if (prc && prc != -ENOSPC) {
		fprintf(stderr, "ember-balance-sim: place: %s\n", err);
		failed = 1;
	}
	uint32_t above0 = above_band_before, above = above_band(&s.c, o.target);
	uint32_t planned = rounds + (stable && !(a.noise > 0)); /* plan calls made */
	double mean_ms = sum_ms / (planned ? planned : 1);
	if (stable)
		rounds = stable_at; /* rounds with moves before the first without */
	if (a.json)
		printf("{\"hosts\": %u, \"vms\": %u, \"seed\": %u, \"level\": %u, "
		       "\"target\": %.4f, \"imbalance_before\": %.4f, \"imbalance_after_round1\": "
		       "%.4f, \"imbalance_after\": %.4f, \"rounds\": %u, \"stable\": %s, "
		       "\"moves_after_stable\": %" PRIu64 ", "
		       "\"moves\": %" PRIu64 ", \"moves_maintenance\": %" PRIu64
		       ", \"moves_rule\": %" PRIu64 ", \"moves_balance\": %" PRIu64
		       ", \"lower_bound\": %" PRIu64 ", \"returns\": %" PRIu64
		       ", \"gib_sent\": %.1f, \"round1_ms\": %.3f, \"max_round_ms\": %.3f, "
		       "\"mean_round_ms\": %.3f, \"max_round_wall_ms\": %.3f, "
		       "\"must_violations_before\": %u, "
		       "\"must_violations_after\": %u, \"should_violations_before\": %u, "
		       "\"should_violations_after\": %u, \"notes_last_round\": %u, "
		       "\"hosts_above_band_before\": %u, \"hosts_above_band_after\": %u, "
		       "\"place_ms\": %.3f}\n",
		       a.hosts, nv, a.seed, a.level, isfinite(o.target) ? o.target : -1, before,
		       first_after, after, rounds, stable ? "true" : "false", after_stable, moves,
		       by_reason[HA_BAL_R_MAINTENANCE], by_reason[HA_BAL_R_RULE],
		       by_reason[HA_BAL_R_BALANCE], bound, returns, (double)bytes / GIB, first_ms,
		       max_ms, mean_ms, max_wall, must0, must, should0, should, notes, above0,
		       above, place_ms);
	else
		printf("%u hosts x %u VMs (seed %u, level %u, target %.3f): imbalance "
		       "%.4f -> %.4f in %u rounds (%s, %" PRIu64 " moves after); %" PRIu64
		       " moves (%" PRIu64 " maintenance, %" PRIu64 " rule, %" PRIu64
		       " balance; band bound %" PRIu64 ", hosts above the band %u -> %u), %" PRIu64
		       " returns, %.1f GiB sent; round 1 %.2f ms cpu, max %.2f ms (wall %.2f), a "
		       "placement %.2f ms; must "
		       "violations %u -> %u, should %u -> %u; %u notes\n",
		       a.hosts, a.per_host, a.seed, a.level, o.target, before, after, rounds,
		       stable ? "stable" : "not stable", after_stable, moves,
		       by_reason[HA_BAL_R_MAINTENANCE], by_reason[HA_BAL_R_RULE],
		       by_reason[HA_BAL_R_BALANCE], bound, above0, above, returns,
		       (double)bytes / GIB, first_ms, max_ms, max_wall, place_ms, must0, must,
		       should0, should, notes);
	if (!a.json && notes)
		for (uint32_t i = 0; i < p.nr_notes && i < 5; i++)
			printf("  note: %s: %s\n", s.c.vms[p.notes[i].vm].name, p.notes[i].why);
	free(p.moves), free(p.notes), free(recent), free(left);
	free(s.c.hosts), free(s.c.vms), free(s.base_cpu), free(s.names), free(s.rules);
	free(s.rule_vms), free(s.rule_hosts);
	return failed;
}
