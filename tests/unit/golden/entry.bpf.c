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
    u32 tid;
    u32 pair;
    u64 sp;
};

BPF_RINGBUF_OUTPUT(events, 4096);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_TABLE("lru_hash", struct start_key, u64, starts, 65536);

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
        u32 zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n) *n += 1;
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
    u64 t3 = ctx->di;
    if (t3 == 0) { e->f0_flags = 1; } else {
        long r = bpf_probe_read_user_str(e->f0, 32, (void *)t3);
        if (r < 0) { e->f0_flags = 4; }
        else { e->f0_len = r > 0 ? r - 1 : 0;
               if (r == 32) e->f0_flags = 2; }
    }
    u64 t4 = ctx->si;
    e->f1 = t4;
    e->f2_len = 0;
    e->f2_flags = 0;
    u64 t5 = ctx->dx;
    u64 t6 = ctx->cx;
    s64 t7 = (s64)(s32)t6;
    e->f2_len = t7 < 0 ? 0 : (u32)t7;
    if (t5 == 0) { e->f2_flags = 1; } else if (t7 > 0) {
        u64 k = t7 > 24 ? 24 : (u64)t7;
        if (t7 > 24) e->f2_flags = 2;
        if (k > 24) k = 24;
        if (bpf_probe_read_user(e->f2, k, (void *)t5) < 0) e->f2_flags = 4;
    }
    u64 t9 = ctx->di;
    u64 t8 = 0;
    bpf_probe_read_user(&t8, 4, (void *)(t9 + 16ULL));
    e->f3 = t8;
    u64 t10 = ctx->r8;
    e->f5 = t10;
    u64 t11 = ctx->r9;
    e->f6 = t11;
    u64 t12 = 0;
    bpf_probe_read_user(&t12, 8, (void *)(ctx->sp + 8ULL));
    e->f7 = t12;
    u64 t15 = ctx->si;
    u64 t14 = 0;
    bpf_probe_read_user(&t14, 8, (void *)(t15 + 8ULL));
    u64 t13 = 0;
    bpf_probe_read_user(&t13, 2, (void *)(t14 + -4LL));
    e->f8 = t13;
    events.ringbuf_submit(e, 0);
    return 0;
}
