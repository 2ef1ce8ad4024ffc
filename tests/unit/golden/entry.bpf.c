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
    u32 f0_len;
    u32 f0_flags;
    char f0[32];
    u64 f1;
    u32 f2_len;
    u32 f2_flags;
    char f2[24];
    u64 f3;
    u64 f5;
    u64 f6;
    u64 f7;
    u64 f8;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 t2 = ctx->di;
    u64 t1 = 0;
    bpf_probe_read_user(&t1, 4, (void *)(t2 + 16ULL));
    if ((s32)t1 != (s32)12ULL) return 0;
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
    e->f0_len = 0;
    e->f0_flags = 0;
    if (t2 == 0) { e->f0_flags = 1; } else {
        long r = bpf_probe_read_user_str(e->f0, 32, (void *)t2);
        if (r < 0) { e->f0_flags = 4; }
        else { e->f0_len = r > 0 ? r - 1 : 0;
               if (r == 32) e->f0_flags = 2; }
    }
    u64 t3 = ctx->si;
    e->f1 = t3;
    e->f2_len = 0;
    e->f2_flags = 0;
    u64 t4 = ctx->dx;
    u64 t5 = ctx->cx;
    s64 t6 = (s64)(s32)t5;
    e->f2_len = t6 < 0 ? 0 : (u32)t6;
    if (t4 == 0 && t6 != 0) { e->f2_flags = 1; } else if (t6 > 0) {
        u64 k = t6 > 24 ? 24 : (u64)t6;
        if (t6 > 24) e->f2_flags = 2;
        if (k > 24) k = 24;
        if (bpf_probe_read_user(e->f2, k, (void *)t4) < 0) e->f2_flags = 4;
    }
    e->f3 = t1;
    u64 t7 = ctx->r8;
    e->f5 = t7;
    u64 t8 = ctx->r9;
    e->f6 = t8;
    u64 t9 = 0;
    bpf_probe_read_user(&t9, 8, (void *)(ctx->sp + 8ULL));
    e->f7 = t9;
    u64 t11 = 0;
    bpf_probe_read_user(&t11, 8, (void *)(t3 + 8ULL));
    u64 t10 = 0;
    bpf_probe_read_user(&t10, 2, (void *)(t11 + -4LL));
    e->f8 = t10;
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_0)));
    return 0;
}
