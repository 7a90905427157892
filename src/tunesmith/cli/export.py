"""`tunesmith export`: a run written for llama.cpp, Ollama, vLLM or ONNX Runtime, each file read back."""

from __future__ import annotations

import argparse

from tunesmith.cli.flags import add_command


def add_commands(commands: argparse._SubParsersAction) -> None:
    export = add_command(commands, "export", "write a run for llama.cpp, Ollama, vLLM or ONNX Runtime; every file is read "
                         "back and its answers compared with the run's", cmd_export)
    export.add_argument("run", help="run folder")
    export.add_argument("--format", dest="export_format", required=True,
                        choices=["gguf", "ollama", "gguf-lora", "vllm", "onnx"],
                        help="gguf: the merged model; ollama: GGUF + Modelfile; gguf-lora: the adapter for llama.cpp's "
                             "--lora; vllm: the adapter checked against vLLM's rules; onnx: classifier runs")
    export.add_argument("--quant", default="f16", help="GGUF type: f32, f16, bf16, q8_0; q4_k_m, q5_k_m, q6_k, q4_0, "
                        "q3_k_m with llama-cpp-python installed (default f16)")
    export.add_argument("-o", "--output", help="folder for the files (default RUN/export)")
    export.add_argument("--prompt", action="append", help="a prompt to compare the export's answers on (repeat; "
                        "default: four general prompts)")
    export.add_argument("--check-data", help="onnx: compare ONNX Runtime with predict on every row of this file "
                        "(default: a few sample texts)")
    export.add_argument("--no-verify", action="store_true", help="skip comparing answers (the file is still read back)")


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.export import export_run

    result = export_run(args.run, args.export_format, out_dir=args.output, quant=args.quant,
                        verify=not args.no_verify, prompts=args.prompt, check_data=args.check_data)
    for path in result.files:
        print(path)
    return 0
