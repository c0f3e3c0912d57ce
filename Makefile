# ember — build, test, run, bench.  See README.md.
CC      ?= cc
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter -I. -MMD -MP
LDFLAGS ?=
BUILD   ?= build
# ember is static: it must run alone in an empty chroot, and a static exec
# is the cheapest start (see README, "Start budget").
STATIC  ?= -static
LIBS    := -linih -lcap-ng -ljansson -lhttp_parser -lz -lpthread

CORE_SRCS := $(wildcard base/*.c monitor/*.c monitor/*/*.c vcpu/*.c config/*.c virtio/*.c snapshot/*.c \
               jail/*.c)
CORE_SRCS := $(filter-out monitor/main.c jail/jailer.c jail/no_nss.c jail/gen_seccomp.c \
               jail/seccomp_rules.c,$(CORE_SRCS))
CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/%.o)
# ha/: the controllers (ember-migrate; emberd later): dynamic binaries
# that link OpenSSL and jansson, never linked into the static ember.
HA_SRCS := $(filter-out ha/migrate/main.c ha/emberd/main.c ha/ctl/main.c ha/balance/sim.c,\
             $(wildcard ha/*.c ha/migrate/*.c ha/emberd/*.c ha/ctl/*.c ha/balance/*.c))
HA_OBJS := $(HA_SRCS:%.c=$(BUILD)/%.o)
HA_LIBS := -lssl -lcrypto -ljansson -lpthread -lm
# emberd: etcd's JSON gateway through libcurl, INI files through inih,
# sd_notify through libsystemd, its control API through http-parser
# (README, "Dependencies").
EMBERD_LIBS := $(HA_LIBS) -lcurl -linih -lsystemd -lhttp_parser
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

.PHONY: all deps guests unit integration test run bench asan clean format fuzz fuzz-short install
all: $(BUILD)/ember $(BUILD)/ember-jailer $(BUILD)/ember-migrate $(BUILD)/emberd $(BUILD)/emberctl \
     $(BUILD)/tools/seccomp_probe $(BUILD)/tools/etcd_probe \
     $(BUILD)/tools/ember-balance-sim guests

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The seccomp filters are compiled to BPF at build time (libseccomp runs
# here, not in ember): see jail/seccomp_rules.c.
$(BUILD)/tools/gen_seccomp: jail/gen_seccomp.c jail/seccomp_rules.c jail/seccomp_rules.h jail/jail.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ jail/gen_seccomp.c jail/seccomp_rules.c -lseccomp

$(BUILD)/gen/seccomp_filters.h: $(BUILD)/tools/gen_seccomp
	@mkdir -p $(dir $@)
	$< > $@.tmp && mv $@.tmp $@

$(BUILD)/jail/seccomp.o: override CFLAGS += -I$(BUILD)/gen
$(BUILD)/jail/seccomp.o: $(BUILD)/gen/seccomp_filters.h

$(BUILD)/libember.a: $(CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

# no_nss.o: see jail/no_nss.c (keeps glibc's NSS out of the static link)
$(BUILD)/ember: $(BUILD)/monitor/main.o $(BUILD)/jail/no_nss.o $(BUILD)/libember.a
	$(CC) $(LDFLAGS) $(STATIC) -o $@ $^ $(LIBS)

# The jailer runs on the host, as root: dynamic (it resolves --uid/--gid
# names through NSS), nothing beyond libc.
$(BUILD)/ember-jailer: $(BUILD)/jail/jailer.o $(BUILD)/libember.a
	$(CC) $(LDFLAGS) -o $@ $^

# The dashboard page, built into emberd as a C string (ha/emberd/web.c).
$(BUILD)/gen/dashboard.h: ha/emberd/dashboard.html ha/emberd/html2c.sh
	@mkdir -p $(dir $@)
	sh ha/emberd/html2c.sh ed_dashboard_html $< > $@.tmp && mv $@.tmp $@

$(BUILD)/ha/emberd/web.o: override CFLAGS += -I$(BUILD)/gen
$(BUILD)/ha/emberd/web.o: $(BUILD)/gen/dashboard.h

$(BUILD)/libha.a: $(HA_OBJS)
	@rm -f $@
	ar rcs $@ $^

# `ember migrate` execs this, found beside ember (monitor/main.c).
$(BUILD)/ember-migrate: $(BUILD)/ha/migrate/main.o $(BUILD)/libha.a
	$(CC) $(LDFLAGS) -o $@ $^ $(HA_LIBS)

# The supervisor and its control CLI (docs/ha.md).
$(BUILD)/emberd: $(BUILD)/ha/emberd/main.o $(BUILD)/libha.a
	$(CC) $(LDFLAGS) -o $@ $^ $(EMBERD_LIBS)

$(BUILD)/emberctl: $(BUILD)/ha/ctl/main.o $(BUILD)/libha.a
	$(CC) $(LDFLAGS) -o $@ $^ $(EMBERD_LIBS)

# The balancer's simulator (docs/balancing.md): pure C and libm.
$(BUILD)/tools/ember-balance-sim: $(BUILD)/ha/balance/sim.o $(BUILD)/libha.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lm

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binaries (ember-migrate
# and emberctl beside ember: `ember migrate` and `ember ctl` exec them from
# there), emberd's systemd unit, an example
# /etc/default/emberd (never over one that exists), the VM folder, and
# docs/ha.md, which the unit names (docs/ha.md, "systemd").  The unit's
# paths follow PREFIX and SYSCONFDIR.
PREFIX  ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL_BINS := ember ember-jailer ember-migrate emberd emberctl
install: $(INSTALL_BINS:%=$(BUILD)/%)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default \
	    $(DESTDIR)$(SYSCONFDIR)/ember/vms $(DESTDIR)$(PREFIX)/share/doc/ember
	install -m 0755 $(INSTALL_BINS:%=$(BUILD)/%) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/usr/local/share/|$(PREFIX)/share/|g' \
	    -e 's|=/etc/|=$(SYSCONFDIR)/|g' -e 's|=-/etc/|=-$(SYSCONFDIR)/|g' -e 's| /etc/| $(SYSCONFDIR)/|g' \
	    ha/systemd/emberd.service > $(DESTDIR)$(UNITDIR)/emberd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/emberd.service.tmp
	mv $(DESTDIR)$(UNITDIR)/emberd.service.tmp $(DESTDIR)$(UNITDIR)/emberd.service
	test -e $(DESTDIR)$(SYSCONFDIR)/default/emberd || \
	    install -m 0644 ha/systemd/emberd.default $(DESTDIR)$(SYSCONFDIR)/default/emberd
	install -m 0644 docs/ha.md $(DESTDIR)$(PREFIX)/share/doc/ember/ha.md

# Test-only: loads one role's seccomp filter, then makes one syscall
# (tests/integration/test_seccomp.py).
$(BUILD)/tools/seccomp_probe: tests/tools/seccomp_probe.c $(BUILD)/jail/no_nss.o $(BUILD)/libember.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(STATIC) -o $@ $< $(BUILD)/jail/no_nss.o $(BUILD)/libember.a $(LIBS)

$(BUILD)/unit/%: tests/unit/%.c $(BUILD)/libember.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libember.a $(LIBS) -lcmocka

# Test-only: one ha/etcd.h call against a real etcd (tests/integration/test_etcd_client.py).
$(BUILD)/tools/etcd_probe: tests/tools/etcd_probe.c $(BUILD)/libha.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libha.a $(EMBERD_LIBS)

# ha/'s tests link ha/ (a shorter stem: this rule wins for test_ha_*).
$(BUILD)/unit/test_ha_%: tests/unit/test_ha_%.c $(BUILD)/libha.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libha.a $(EMBERD_LIBS) -lcmocka

guests:
	$(MAKE) -C tests/guest BUILD=$(abspath $(BUILD))/guest

deps:
	@sh tests/install-deps.sh

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

PYTHON ?= /usr/bin/python3

# libFuzzer targets (clang from Debian).  Each NAME in FUZZ_TARGETS is
# tests/fuzz/fuzz_NAME.c linked with FUZZ_SRCS_NAME (the sources it tests)
# and, if set, FUZZ_LIBS_NAME; it runs with FUZZ_ARGS_NAME (if set) on the
# working corpus $(BUILD)/fuzz/corpus-NAME (new inputs go there) and the
# committed seeds in tests/fuzz/corpus/NAME (if there are any); a crash is
# saved as $(BUILD)/fuzz/NAME-crash-*.  Adding a target: its name here and
# a FUZZ_SRCS_ line.  `make fuzz` runs each target FUZZ_TIME seconds (per
# target, so none gets less as others are added), `make fuzz-short` (in
# `make test`) FUZZ_SHORT_TIME each, `make fuzz-NAME` one of them.
FUZZ_TARGETS := virtqueue ini snapstate stream migstream
# Every vq_pop() checked against a second walker in the harness.
FUZZ_SRCS_virtqueue := virtio/virtqueue.c base/guest_mem.c
FUZZ_ARGS_virtqueue := -max_len=34000
# The INI reader: cfg_parse_ini, then cfg_validate, and the config's invariants.
FUZZ_SRCS_ini := config/config.c config/ini.c config/units.c
FUZZ_LIBS_ini := -linih
FUZZ_ARGS_ini := -max_len=12000 -dict=tests/fuzz/ini.dict
# The state file with its CRC recomputed: snap_r_open_mem, then every
# record's check (snap_check_records), and the configuration's invariants.
FUZZ_SRCS_snapstate := monitor/snap_check.c snapshot/format.c config/config.c config/import.c \
                       config/units.c monitor/hvt/hvt_mft.c base/guest_mem.c
FUZZ_LIBS_snapstate := -lz
FUZZ_ARGS_snapstate := -max_len=65536
# A stream's memory records (snap_stream_get_mem) onto zeroed RAM and onto
# RAM holding a previous round: an accepted stream's RAM hashes as it says.
FUZZ_SRCS_stream := snapshot/stream.c snapshot/format.c snapshot/memfile.c
FUZZ_LIBS_stream := -lz
FUZZ_ARGS_stream := -max_len=65536
# The live migration stream's records (snap_mig_get_hdr/_body): refusals
# name an offset, accepted records re-encode to the same header.
FUZZ_SRCS_migstream := snapshot/migstream.c snapshot/stream.c snapshot/format.c snapshot/memfile.c
FUZZ_LIBS_migstream := -lz
FUZZ_ARGS_migstream := -max_len=65536

FUZZ_TIME       ?= 300
FUZZ_SHORT_TIME ?= 10
FUZZ_CC    ?= clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -I. -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
              -Wmissing-prototypes -Wno-unused-parameter -Wno-gnu-variable-sized-type-not-at-end \
              -MMD -MP -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJS  := $(sort $(foreach t,$(FUZZ_TARGETS),$(FUZZ_SRCS_$(t)) tests/fuzz/fuzz_$(t).c))
FUZZ_OBJS  := $(FUZZ_OBJS:%.c=$(BUILD)/fuzz/obj/%.o)
.SECONDARY: $(FUZZ_OBJS)

# Objects built apart from the rest (sanitizers, coverage), shared by targets.
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# A target's binary: its harness (pattern) and its FUZZ_SRCS_ (one rule each).
$(foreach t,$(FUZZ_TARGETS),$(eval $(BUILD)/fuzz/fuzz_$(t): $(FUZZ_SRCS_$(t):%.c=$(BUILD)/fuzz/obj/%.o)))
$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/tests/fuzz/fuzz_%.o
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS_$*)

.PHONY: $(FUZZ_TARGETS:%=fuzz-%)
fuzz: $(FUZZ_TARGETS:%=fuzz-%)
fuzz-short: FUZZ_TIME = $(FUZZ_SHORT_TIME)
fuzz-short: $(FUZZ_TARGETS:%=fuzz-%)
$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: $(BUILD)/fuzz/fuzz_%
	@mkdir -p $(BUILD)/fuzz/corpus-$*
	$< $(FUZZ_ARGS_$*) -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/$*- $(BUILD)/fuzz/corpus-$* $(wildcard tests/fuzz/corpus/$*)

integration: $(BUILD)/ember $(BUILD)/ember-jailer $(BUILD)/ember-migrate $(BUILD)/emberd $(BUILD)/emberctl \
             $(BUILD)/tools/seccomp_probe $(BUILD)/tools/etcd_probe \
             guests
	$(PYTHON) -m pytest -q -rs tests/integration

# The README's test command: installs what is missing, builds, runs all.
test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) fuzz-short
	$(MAKE) integration

run: deps
	$(MAKE) all
	@sh examples/run-hello.sh $(BUILD)/ember

bench: deps
	$(MAKE) all
	$(PYTHON) tests/bench/bench.py --ember $(BUILD)/ember --guests $(BUILD)/guest

# Sanitizer build: dynamic (ASan cannot be static), separate build dir.
asan:
	$(MAKE) BUILD=build-asan STATIC= CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	        LDFLAGS="-fsanitize=address,undefined" all unit
	EMBER=build-asan/ember GUESTS=build-asan/guest $(PYTHON) -m pytest -q -rs tests/integration

format:
	clang-format -i $(wildcard */*.c */*.h monitor/*/*.c monitor/*/*.h ha/*/*.c ha/*/*.h \
	                tests/unit/*.c)

clean:
	rm -rf build build-asan

-include $(CORE_OBJS:.o=.d) $(HA_OBJS:.o=.d) $(BUILD)/ha/migrate/main.d $(BUILD)/ha/emberd/main.d $(BUILD)/ha/ctl/main.d $(BUILD)/ha/balance/sim.d $(BUILD)/monitor/main.d $(UNIT_BINS:=.d) $(BUILD)/jail/jailer.d \
	$(BUILD)/tools/seccomp_probe.d $(BUILD)/tools/etcd_probe.d $(FUZZ_OBJS:.o=.d)
