from imgcls.cli import main

if __name__ == "__main__":  # not when multiprocessing imports this module as __mp_main__
    raise SystemExit(main())
