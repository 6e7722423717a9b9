import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Command,
  commandName,
  decodeHeader,
  decodeVersionBody,
  encodeErrorReply,
  encodeHeader,
  encodeMessage,
  encodeReply,
  encodeVersionBody,
  MsgFlag,
} from './protocol.js';

describe('vfio-user header codec', () => {
  it('lays the header out as u16 id, u16 command, u32 size, u32 flags, u32 error, little-endian', () => {
    const m = encodeMessage(
      { id: 0x1234, command: Command.REGION_READ, flags: MsgFlag.NO_REPLY, error: 0 },
      new Uint8Array([0xaa, 0xbb]),
    );
    expect([...m]).toEqual([0x34, 0x12, 0x09, 0x00, 0x12, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb]);
  });

  it('round-trips any header', () => {
    fc.assert(
      fc.property(
        fc.nat(0xffff),
        fc.nat(0xffff),
        fc.nat(0xffffffff),
        fc.nat(0xffffffff),
        fc.nat(0xffffffff),
        (id, command, size, flags, error) => {
          const b = new Uint8Array(16);
          encodeHeader(b, { id, command, size, flags, error });
          expect(decodeHeader(b)).toEqual({ id, command, size, flags, error });
        },
      ),
    );
  });

  it('builds replies and error replies that echo id and command', () => {
    const r = decodeHeader(encodeReply({ id: 7, command: Command.DMA_MAP }, new Uint8Array(4)));
    expect(r).toEqual({ id: 7, command: 2, size: 20, flags: MsgFlag.REPLY, error: 0 });
    const e = encodeErrorReply({ id: 9, command: 99 }, 38);
    expect(e.length).toBe(16);
    expect(decodeHeader(e)).toEqual({
      id: 9,
      command: 99,
      size: 16,
      flags: MsgFlag.REPLY | MsgFlag.ERROR,
      error: 38,
    });
  });

  it('names commands', () => {
    expect(commandName(Command.DEVICE_SET_IRQS)).toBe('DEVICE_SET_IRQS');
    expect(commandName(200)).toBe('CMD_200');
  });
});

describe('VERSION body', () => {
  it('encodes major, minor and NUL-terminated capabilities JSON', () => {
    const b = encodeVersionBody(0, 0, {
      maxMsgFds: 8,
      maxDataXferSize: 1048576,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      writeMultiple: true,
    });
    expect([...b.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    expect(b[b.length - 1]).toBe(0);
    const json = JSON.parse(new TextDecoder().decode(b.subarray(4, b.length - 1)));
    expect(json).toEqual({
      capabilities: {
        max_msg_fds: 8,
        max_data_xfer_size: 1048576,
        pgsizes: 4096,
        max_dma_maps: 65535,
        write_multiple: true,
      },
    });
    expect(decodeVersionBody(b)).toEqual({ major: 0, minor: 0, caps: json });
  });

  it('rejects short bodies, missing NUL and bad JSON', () => {
    expect(decodeVersionBody(new Uint8Array(3))).toBeNull();
    expect(decodeVersionBody(new Uint8Array([0, 0, 0, 0, 0x7b]))).toBeNull();
    expect(decodeVersionBody(new Uint8Array([0, 0, 0, 0, 0x7b, 0]))).toBeNull();
    expect(decodeVersionBody(new Uint8Array([1, 0, 2, 0]))).toEqual({ major: 1, minor: 2, caps: {} });
  });
});
