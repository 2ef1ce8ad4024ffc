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
struct slow_buf { u8 b[264]; };
BPF_PERCPU_ARRAY(slow_scratch, struct slow_buf, 1);
BPF_F_TABLE("hash", struct start_key, struct slow_buf, slow_open, 16384, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(slow_full, u64, 1);

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
    char f0[64];
    u64 f1;
    s64 ustack_n;
    u64 ustack[16];
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    u64 t2 = 0;
    bpf_probe_read_kernel(&t2, 8, (void *)(bpf_get_current_task() + 6984ULL));
    u64 t1 = 0;
    bpf_probe_read_user(&t1, 8, (void *)(t2 + -8LL));
    u64 t4 = 0;
    bpf_probe_read_user(&t4, 8, (void *)(t1 + 8ULL));
    u64 t5 = ctx->sp;
    u64 t3 = t4 - t5;
    struct start_key sk = { .a = t1, .b = t3, .pair = 0, .who = pid };
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
    e->f0_len = 0;
    e->f0_flags = 0;
    u64 t6 = 0;
    bpf_probe_read_user(&t6, 8, (void *)(ctx->sp + 8ULL));
    u64 t7 = 0;
    bpf_probe_read_user(&t7, 8, (void *)(ctx->sp + 16ULL));
    s64 t8 = (s64)(s64)t7;
    e->f0_len = t8 < 0 ? 0 : (u32)t8;
    if (t6 == 0 && t8 != 0) { e->f0_flags = 1; } else if (t8 > 0) {
        u64 k = t8 > 64 ? 64 : (u64)t8;
        if (t8 > 64) e->f0_flags = 2;
        if (k > 64) k = 64;
        if (bpf_probe_read_user(e->f0, k, (void *)t6) < 0) e->f0_flags = 4;
    }
    u64 t9 = 0;
    bpf_probe_read_user(&t9, 8, (void *)(t1 + 152ULL));
    e->f1 = t9;
    e->ustack[0] = ctx->ip;
    e->ustack[1] = 0;
    bpf_probe_read_user(&e->ustack[1], 8, (void *)ctx->sp);
    s64 sn = 2;
    u64 fp = ctx->bp;
    for (int i = 2; i < 16; i++) {
        u64 fr[2] = {};
        if (fp == 0 || (fp & 7) || bpf_probe_read_user(fr, 16, (void *)fp) < 0 || fr[1] == 0) break;
        e->ustack[i] = fr[1];
        sn = i + 1;
        if (fr[0] <= fp) break;
        fp = fr[0];
    }
    e->ustack_n = sn;
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
    u64 f1;
    s64 ustack_n;
    u64 ustack[16];
} __attribute__((packed));
int probe_1(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    u64 t2 = 0;
    bpf_probe_read_kernel(&t2, 8, (void *)(bpf_get_current_task() + 6984ULL));
    u64 t1 = 0;
    bpf_probe_read_user(&t1, 8, (void *)(t2 + -8LL));
    u64 t4 = 0;
    bpf_probe_read_user(&t4, 8, (void *)(t1 + 8ULL));
    u64 t5 = ctx->sp;
    u64 t3 = t4 - t5;
    struct start_key sk = { .a = t1, .b = t3, .pair = 0, .who = pid };
    struct slow_buf *kept = slow_open.lookup(&sk);
    if (!kept) return 0;
    u64 latency = now - ((struct header *)kept)->ts;
    if (latency < 10000000ULL) {
        slow_open.delete(&sk);
        return 0;
    }
    if (events.ringbuf_output(kept, 264, 0)) utrace_lost();
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
    u64 t6 = 0;
    bpf_probe_read_user(&t6, 8, (void *)(ctx->sp + 32ULL));
    e->f0 = t6;
    u64 t7 = 0;
    bpf_probe_read_user(&t7, 8, (void *)(t1 + 152ULL));
    e->f1 = t7;
    e->ustack[0] = ctx->ip;
    e->ustack[1] = 0;
    bpf_probe_read_user(&e->ustack[1], 8, (void *)ctx->sp);
    s64 sn = 2;
    u64 fp = ctx->bp;
    for (int i = 2; i < 16; i++) {
        u64 fr[2] = {};
        if (fp == 0 || (fp & 7) || bpf_probe_read_user(fr, 16, (void *)fp) < 0 || fr[1] == 0) break;
        e->ustack[i] = fr[1];
        sn = i + 1;
        if (fr[0] <= fp) break;
        fp = fr[0];
    }
    e->ustack_n = sn;
    events.ringbuf_submit(e, 0);
    return 0;
}
