#include <uapi/linux/ptrace.h>

struct header {
    u32 probe;
    u32 pid;
    u32 tid;
    u32 cpu;
    u64 ts;
    u64 latency;
    char comm[16];
} __attribute__((packed));

struct start_key {
    u64 a;
    u64 b;
    u32 pair;
    u32 who;
};

struct agg_key {
    u32 probe;
    u32 pid;
    u32 slot;
};

BPF_RINGBUF_OUTPUT(events, 4096);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(unwoken, u64, 1);
struct slow_buf { u8 b[312]; };
BPF_PERCPU_ARRAY(slow_scratch, struct slow_buf, 1);
BPF_F_TABLE("hash", struct start_key, struct slow_buf, slow_open, 16384, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(slow_full, u64, 1);
BPF_HASH(nest, struct start_key, u64, 65536);

static __always_inline void utrace_lost(void) {
    u32 zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n) *n += 1;
}

static __always_inline u64 utrace_wakeup(u64 size) {
    u32 zero = 0;
    u64 *n = unwoken.lookup(&zero);
    if (!n) return 0;
    if (*n == 0) {
        *n = 1;
        return BPF_RB_FORCE_WAKEUP;
    }
    *n += size;
    if (*n < 1048576) return BPF_RB_NO_WAKEUP;
    *n = 1;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline int utrace_ids(u32 *pid, u32 *tid) {
    u64 id = bpf_get_current_pid_tgid();
    *pid = id >> 32;
    *tid = (u32)id;
    return 0;
}

struct event_0 {
    struct header h;
    u64 f0;
    u64 f1;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key sk = { .a = ctx->sp, .b = 0, .pair = 0, .who = tid };
    u32 zero = 0;
    struct slow_buf *buf = slow_scratch.lookup(&zero);
    if (!buf) return 0;
    struct event_0 *e = (struct event_0 *)buf;
    e->h.probe = 0;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = 0;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    u64 t1 = ctx->di;
    e->f0 = t1;
    u64 t2 = ctx->si;
    e->f1 = t2;
    if (slow_open.update(&sk, buf)) {
        utrace_lost();
        u64 *full = slow_full.lookup(&zero);
        if (full) *full += 1;
    }
    return 0;
}

struct event_1 {
    struct header h;
    u64 f0;
} __attribute__((packed));
int probe_1(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key sk = { .a = ctx->sp - 8ULL, .b = 0, .pair = 0, .who = tid };
    struct slow_buf *kept = slow_open.lookup(&sk);
    if (!kept) return 0;
    u64 latency = now - ((struct header *)kept)->ts;
    if (latency < 10000000ULL) {
        slow_open.delete(&sk);
        return 0;
    }
    if (events.ringbuf_output(kept, 64, utrace_wakeup(64))) utrace_lost();
    slow_open.delete(&sk);
    struct event_1 *e = events.ringbuf_reserve(sizeof(struct event_1));
    if (!e) {
        utrace_lost();
        return 0;
    }
    e->h.probe = 1;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = latency;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    u64 t1 = ctx->ax;
    e->f0 = t1;
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_1)));
    return 0;
}

struct event_2 {
    struct header h;
    u32 f0_len;
    u32 f0_flags;
    char f0[256];
} __attribute__((packed));
int probe_2(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key nk = { .a = 0, .b = 0, .pair = 1, .who = tid };
    u64 *nd = nest.lookup(&nk);
    u64 depth = nd ? *nd : 0;
    u64 deeper = depth + 1;
    if (nd) { *nd = deeper; } else if (nest.update(&nk, &deeper)) { utrace_lost(); }
    struct start_key sk = { .a = depth, .b = 0, .pair = 1, .who = tid };
    u32 zero = 0;
    struct slow_buf *buf = slow_scratch.lookup(&zero);
    if (!buf) return 0;
    struct event_2 *e = (struct event_2 *)buf;
    e->h.probe = 2;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = 0;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    e->f0_len = 0;
    e->f0_flags = 0;
    u64 t1 = ctx->bx;
    if (t1 == 0) { e->f0_flags = 1; } else {
        long r = bpf_probe_read_user_str(e->f0, 256, (void *)t1);
        if (r < 0) { e->f0_flags = 4; }
        else { e->f0_len = r > 0 ? r - 1 : 0;
               if (r == 256) e->f0_flags = 2; }
    }
    if (slow_open.update(&sk, buf)) {
        utrace_lost();
        u64 *full = slow_full.lookup(&zero);
        if (full) *full += 1;
    }
    return 0;
}

struct event_3 {
    struct header h;
    u32 f0_len;
    u32 f0_flags;
    char f0[256];
} __attribute__((packed));
int probe_3(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key nk = { .a = 0, .b = 0, .pair = 1, .who = tid };
    u64 *nd = nest.lookup(&nk);
    u64 depth = 0xffffffffffffffffULL;
    if (nd && *nd > 0) {
        depth = *nd - 1;
        if (depth == 0) nest.delete(&nk); else *nd = depth;
    }
    struct start_key sk = { .a = depth, .b = 0, .pair = 1, .who = tid };
    struct slow_buf *kept = slow_open.lookup(&sk);
    if (!kept) return 0;
    u64 latency = now - ((struct header *)kept)->ts;
    if (latency < 10000000ULL) {
        slow_open.delete(&sk);
        return 0;
    }
    if (events.ringbuf_output(kept, 312, utrace_wakeup(312))) utrace_lost();
    slow_open.delete(&sk);
    struct event_3 *e = events.ringbuf_reserve(sizeof(struct event_3));
    if (!e) {
        utrace_lost();
        return 0;
    }
    e->h.probe = 3;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = latency;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    e->f0_len = 0;
    e->f0_flags = 0;
    u64 t1 = ctx->bx;
    if (t1 == 0) { e->f0_flags = 1; } else {
        long r = bpf_probe_read_user_str(e->f0, 256, (void *)t1);
        if (r < 0) { e->f0_flags = 4; }
        else { e->f0_len = r > 0 ? r - 1 : 0;
               if (r == 256) e->f0_flags = 2; }
    }
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_3)));
    return 0;
}
