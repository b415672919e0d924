package dev.colod.core.protocol;

/**
 * The seven checkpoint-protocol messages, with the wire ids of the QEMU COLO design
 * ("COLO: Implement colo checkpoint protocol"). On the wire each is one big-endian 32-bit id.
 * The ids are part of the protocol: never renumber.
 */
public enum ColoCommand
{
    CHECKPOINT_READY(0, "checkpoint-ready"),
    CHECKPOINT_REQUEST(1, "checkpoint-request"),
    CHECKPOINT_REPLY(2, "checkpoint-reply"),
    VMSTATE_SEND(3, "vmstate-send"),
    VMSTATE_SIZE(4, "vmstate-size"),
    VMSTATE_RECEIVED(5, "vmstate-received"),
    VMSTATE_LOADED(6, "vmstate-loaded");

    private static final ColoCommand[] BY_ID = values();

    private final int id;
    private final String wireName;

    ColoCommand(final int id, final String wireName)
    {
        this.id = id;
        this.wireName = wireName;
    }

    public int id()
    {
        return id;
    }

    public String wireName()
    {
        return wireName;
    }

    /**
     * Decode a be32 id read from the wire. The value is treated as unsigned, so a "negative" int is simply a
     * large id and is refused like any other value outside 0..6: no sign trick turns garbage into a command.
     */
    public static ColoCommand fromWire(final int raw) throws ProtocolException
    {
        final long unsigned = Integer.toUnsignedLong(raw);
        if (unsigned >= BY_ID.length)
        {
            throw ProtocolException.invalidCommand(unsigned);
        }
        return BY_ID[(int)unsigned];
    }

    @Override
    public String toString()
    {
        return id + " (" + wireName + ")";
    }
}
