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
    u32 f1_len;
    u32 f1_flags;
    char f1[256];
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 t1 = ctx->dx;
    u64 t2 = ctx->cx;
    s64 t3 = (s64)(s32)t2;
    if (t1 == 0 || t3 <= 0) return 0;
    u64 t4 = t3 > 10 ? 10 : (u64)t3;
    u64 t5[2] = {};
    if (bpf_probe_read_user(t5, t4, (void *)t1) < 0) return 0;
    int t6 = 0;
    if (t3 >= 4 && (((t5[0] & 4294967295ULL) ^ 1869440324ULL)) == 0) t6 = 1;
    if (t3 >= 10 && ((t5[0] ^ 7598827317639930218ULL) | ((t5[1] & 65535ULL) ^ 12140ULL)) == 0) t6 = 1;
    if (!t6) return 0;
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
    u64 t7 = ctx->ax;
    e->f0 = t7;
    e->f1_len = 0;
    e->f1_flags = 0;
    s64 t8 = (s64)(s32)t2;
    e->f1_len = t8 < 0 ? 0 : (u32)t8;
    if (t1 == 0 && t8 != 0) { e->f1_flags = 1; } else if (t8 > 0) {
        u64 k = t8 > 256 ? 256 : (u64)t8;
        if (t8 > 256) e->f1_flags = 2;
        if (k > 256) k = 256;
        if (bpf_probe_read_user(e->f1, k, (void *)t1) < 0) e->f1_flags = 4;
    }
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_0)));
    return 0;
}
