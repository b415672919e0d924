package dev.colod.agent.qemu;

import java.io.IOException;

/** QEMU answered a QMP command with an error, or did not answer in time. Carries QEMU's error class and text. */
public final class QmpException extends IOException
{
    private final String errorClass;

    public QmpException(final String command, final String errorClass, final String description)
    {
        super("QMP " + command + " failed: " + errorClass + ": " + description);
        this.errorClass = errorClass;
    }

    public String errorClass()
    {
        return errorClass;
    }
}
