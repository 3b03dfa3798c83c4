# bench/run.sh --tls: the gateway against nchan per transport at the run's largest N (10,000),
# memory and time.
# gnuplot -e "data='tls.dat'; out='tls.svg'" bench/chart_tls.gp   (data: report.py --tls-chart-data)
set terminal svg size 960,460 font "sans,12" background rgb "white"
set output out
set multiplot layout 1,2
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key below horizontal
set grid ytics
set yrange [0:*]
set xtics rotate by -20 scale 0
set ylabel "server PSS per idle client (KB)"
set title "Memory per idle client"
plot data using 2:xtic(1) title "gateway" lc rgb "#1f77b4", '' using 3 title "nchan (nginx)" lc rgb "#aaaaaa"
set ylabel "time until the last client has the change (ms)"
set title "Fan-out of one 1 KB change"
plot data using 4:xtic(1) title "gateway" lc rgb "#1f77b4", '' using 5 title "nchan (nginx)" lc rgb "#aaaaaa"
unset multiplot
