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
    u64 f2;
    u64 f3;
    u64 f4;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct event_0 *e = events.ringbuf_reserve(sizeof(struct event_0));
    if (!e) {
        utrace_lost();
        return 0;
    }
    e->h.probe = 0;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = 0;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    u64 t1 = (u64)-1LL;
    e->f0 = t1;
    u64 t2 = (u64)42ULL;
    e->f1 = t2;
    u64 t4 = ctx->bp;
    u64 t3 = 0;
    bpf_probe_read_user(&t3, 4, (void *)(t4 + -8LL));
    e->f2 = t3;
    u64 t5 = ctx->ax;
    e->f3 = t5;
    u64 t7 = ctx->sp;
    u64 t6 = 0;
    bpf_probe_read_user(&t6, 8, (void *)(t7 + 152ULL));
    e->f4 = t6;
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_0)));
    return 0;
}

struct event_1 {
    struct header h;
    u32 f0_len;
    u32 f0_flags;
    char f0[64];
    u64 f1;
    u64 f2;
} __attribute__((packed));
int probe_1(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
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
    e->h.latency = 0;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    e->f0_len = 0;
    e->f0_flags = 0;
    u64 t1 = ctx->di;
    u64 t2 = ctx->si;
    s64 t3 = (s64)(s32)t2;
    e->f0_len = t3 < 0 ? 0 : (u32)t3;
    if (t1 == 0 && t3 != 0) { e->f0_flags = 1; } else if (t3 > 0) {
        u64 k = t3 > 64 ? 64 : (u64)t3;
        if (t3 > 64) e->f0_flags = 2;
        if (k > 64) k = 64;
        if (bpf_probe_read_user(e->f0, k, (void *)t1) < 0) e->f0_flags = 4;
    }
    u64 t4 = ctx->dx;
    e->f1 = t4;
    u64 t5 = ctx->cx;
    e->f2 = t5;
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_1)));
    return 0;
}
