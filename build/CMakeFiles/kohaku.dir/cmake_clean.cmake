file(REMOVE_RECURSE
  "CMakeFiles/kohaku.dir/src/main.c.o"
  "CMakeFiles/kohaku.dir/src/main.c.o.d"
  "kohaku"
  "kohaku.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/kohaku.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
