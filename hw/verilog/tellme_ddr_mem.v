// Storage of tellme.hw.ddr_model.DdrModel (simulation only): a plain `reg` array, no initial
// contents (Verilator starts it at zero; testbenches fill it through VPI, see sim/tb/ddr.py).
//
// RD_PORTS synchronous read ports (enable, not transparent: a read in the cycle of a write to
// the same word returns the old word) and one synchronous write port with a byte enable per
// 8 bits, the behaviour of the amaranth.lib.memory.Memory it replaces. Word i holds the bytes
// i*WIDTH/8 .. (i+1)*WIDTH/8 - 1 of the memory, little-endian. Read port p uses bits
// [p*ABITS +: ABITS] of rd_addr, bit p of rd_en and bits [p*WIDTH +: WIDTH] of rd_data.
// Addresses at or above DEPTH read undefined data and write nothing (the model masks both).
//
// sim/rtl.py run_cocotb adds this file to the Verilator build of any design that instantiates
// the module (hand-written modules live in hw/verilog/, file name = module name).
module tellme_ddr_mem #(
    parameter integer WIDTH = 128,
    parameter integer DEPTH = 256,
    parameter integer ABITS = 8,
    parameter integer RD_PORTS = 1
) (
    input  wire                      clk,
    input  wire [RD_PORTS*ABITS-1:0] rd_addr,
    input  wire [RD_PORTS-1:0]       rd_en,
    output reg  [RD_PORTS*WIDTH-1:0] rd_data,
    input  wire [ABITS-1:0]          wr_addr,
    input  wire [WIDTH-1:0]          wr_data,
    input  wire [WIDTH/8-1:0]        wr_en
);
    // Public: testbenches load and read it through VPI even in builds without --public-flat-rw.
    reg [WIDTH-1:0] mem [DEPTH-1:0] /* verilator public_flat_rw */;

    integer p, b;
    always @(posedge clk) begin
        for (p = 0; p < RD_PORTS; p = p + 1)
            if (rd_en[p])
                rd_data[p*WIDTH +: WIDTH] <= mem[rd_addr[p*ABITS +: ABITS]];
        for (b = 0; b < WIDTH / 8; b = b + 1)
            if (wr_en[b])
                mem[wr_addr][b*8 +: 8] <= wr_data[b*8 +: 8];
    end
endmodule
