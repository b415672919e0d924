package dev.colod.buffer.xdp;

import java.util.ArrayList;
import java.util.List;

import static dev.colod.buffer.xdp.Bpf.Insn.call;
import static dev.colod.buffer.xdp.Bpf.Insn.exit;
import static dev.colod.buffer.xdp.Bpf.Insn.loadMap;
import static dev.colod.buffer.xdp.Bpf.Insn.loadWord;
import static dev.colod.buffer.xdp.Bpf.Insn.addImm;
import static dev.colod.buffer.xdp.Bpf.Insn.atomicAdd64;
import static dev.colod.buffer.xdp.Bpf.Insn.jumpIfEqual;
import static dev.colod.buffer.xdp.Bpf.Insn.movImm;
import static dev.colod.buffer.xdp.Bpf.Insn.movReg;
import static dev.colod.buffer.xdp.Bpf.Insn.storeWordImm;
import static dev.colod.buffer.xdp.Bpf.Insn.subReg;

/**
 * colod's BPF programs, all of them, as instructions (no compiler at run time). Each is shown first as the C it
 * is equivalent to. Registers: r0 return value, r1-r5 arguments, r10 frame pointer.
 */
public final class XdpPrograms
{
    // uapi/linux/bpf.h: enum xdp_action, helper ids, struct xdp_md offsets
    public static final int XDP_ABORTED = 0;
    public static final int XDP_DROP = 1;
    public static final int XDP_PASS = 2;
    public static final int XDP_REDIRECT = 4;
    static final int HELPER_MAP_LOOKUP_ELEM = 1;
    static final int HELPER_REDIRECT = 23;
    static final int HELPER_REDIRECT_MAP = 51;
    static final int XDP_MD_DATA = 0;
    static final int XDP_MD_DATA_END = 4;
    static final int XDP_MD_RX_QUEUE_INDEX = 16;

    private XdpPrograms()
    {
    }

    /**
     * Guest egress, on the VM's tap (XDP there sees every frame QEMU writes): every frame into the AF_XDP socket
     * of its queue, whose UMEM is the epoch buffer; with no socket (agent gone) the frame is dropped, never
     * let out unheld.
     * <pre>
     * int hold(struct xdp_md *ctx) {
     *     return bpf_redirect_map(&amp;xsks, ctx-&gt;rx_queue_index, XDP_DROP);
     * }
     * </pre>
     */
    public static long[] holdEgress(final int xskMapFd)
    {
        final List<Long> p = new ArrayList<>();
        p.add(loadWord(2, 1, XDP_MD_RX_QUEUE_INDEX)); // r2 = ctx->rx_queue_index
        for (final long i : loadMap(1, xskMapFd))     // r1 = &xsks
        {
            p.add(i);
        }
        p.add(movImm(3, XDP_DROP));                   // r3 = XDP_DROP: the action when the queue has no socket
        p.add(call(HELPER_REDIRECT_MAP));             // r0 = bpf_redirect_map(r1, r2, r3)
        p.add(exit());                                // return r0
        return p.stream().mapToLong(Long::longValue).toArray();
    }

    /**
     * Inbound, on the uplink veth (frames from the bridge): counted, then straight on to the VM's tap in the
     * kernel, never held. {@code counters}: an ARRAY map of one 16-byte value (frames, bytes).
     * <pre>
     * int inbound(struct xdp_md *ctx) {
     *     __u32 key = 0;
     *     __u64 *c = bpf_map_lookup_elem(&amp;counters, &amp;key);
     *     if (c) { __sync_fetch_and_add(&amp;c[0], 1); __sync_fetch_and_add(&amp;c[1], ctx-&gt;data_end - ctx-&gt;data); }
     *     return bpf_redirect(VM_TAP_IFINDEX, 0);
     * }
     * </pre>
     */
    public static long[] redirectInbound(final int vmTapIfindex, final int counters)
    {
        final List<Long> p = new ArrayList<>();
        p.add(loadWord(2, 1, XDP_MD_DATA_END));        // r2 = ctx->data_end
        p.add(loadWord(3, 1, XDP_MD_DATA));            // r3 = ctx->data
        p.add(movReg(7, 2));                           // r7 = data_end
        p.add(subReg(7, 3));                           // r7 -= data: the frame's length
        p.add(storeWordImm(10, -4, 0));                // key = 0 (on the stack)
        p.add(movReg(2, 10));                          // r2 = &key
        p.add(addImm(2, -4));
        for (final long i : loadMap(1, counters))      // r1 = &counters
        {
            p.add(i);
        }
        p.add(call(HELPER_MAP_LOOKUP_ELEM));           // r0 = bpf_map_lookup_elem(r1, r2)
        p.add(jumpIfEqual(0, 0, 3));                   // if (!r0) skip the counting
        p.add(movImm(1, 1));                           // r1 = 1
        p.add(atomicAdd64(0, 0, 1));                   // c[0] += 1
        p.add(atomicAdd64(0, 8, 7));                   // c[1] += length
        p.add(movImm(1, vmTapIfindex));                // r1 = the VM tap's ifindex
        p.add(movImm(2, 0));                           // r2 = flags 0
        p.add(call(HELPER_REDIRECT));                  // r0 = bpf_redirect(r1, r2): XDP_REDIRECT
        p.add(exit());                                 // return r0
        return p.stream().mapToLong(Long::longValue).toArray();
    }
}
